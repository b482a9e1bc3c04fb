/* test_failclosed.c: an unattended line must never hear "normal" when the tool cannot tell, and
 * never lose or mix up a run. One test per case, end to end with a tiny model trained here:
 *   1. a model file with a NaN weight is refused on loading, naming the tensor; a score that is not
 *      a finite number is the verdict "error" (exit 3, JSON and CSV say so), never "normal";
 *   2. an --out or --data-root that does not fit is refused, never cut to another folder;
 *   3. two trainings into one folder: the second fails at once naming the first's pid;
 *   4. the same image at several positions of a folder and alone: bit-identical scores and maps;
 *   5. a FIFO given as --image or --model is refused at once (a timeout guards the test);
 *   6. data.val_fraction=0 is refused before any training;
 *   7. SIGINT while an output is being written leaves no temporary file and exits 130;
 *   8. an output name of 254 characters works (temporary names do not grow with it);
 *   9. a loss that diverges before the first checkpoint says so, never "the last checkpoint is kept". */
#include "testlib.h"
#include "drdc/core/fsutil.h"
#include "drdc/formats/csv.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static char g_tmp[1024], g_data[1200], g_img[1400];

static const char *SETS =
    "--set data.categories=weave,disc --set base.epochs=1 --set base.batch=4 --set data.val_fraction=0.25 "
    "--set refiner.batch=2 --set refiner.steps=2 --set infer.batch=4 --set infer.steps=2";

/* `drdc ARGS` in the test folder, output to log; its exit code (testlib). */
#define drdc(log, ...) test_drdc_in(g_tmp, (log), __VA_ARGS__)

/* 1 when the test folder's log contains needle (testlib). */
#define log_has(log, needle) test_log_has(g_tmp, (log), (needle))

static cJSON *read_json(const char *name) {
    char path[2048], *text = NULL;
    size_t n = 0;
    snprintf(path, sizeof path, "%s/%s", g_tmp, name);
    if (drdc_read_file(path, &text, &n)) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

/* Rewrites a model file with python (standard library): one value of a tensor set to NaN, or a key of
 * the stats metadata set to a value. */
static int patch_model(const char *src, const char *dst, const char *tensor, const char *stat_key, double stat_value) {
    return test_system(
        "cd '%s' && /usr/bin/python3 - '%s' '%s' '%s' '%s' '%.17g' <<'EOF'\n"
        "import json, struct, sys\n"
        "src, dst, tensor, key, value = sys.argv[1:]\n"
        "blob = open(src, 'rb').read()\n"
        "n = struct.unpack('<Q', blob[:8])[0]\n"
        "head = json.loads(blob[8:8 + n]); data = bytearray(blob[8 + n:])\n"
        "if tensor != '-':\n"
        "    b = head[tensor]['data_offsets'][0]\n"
        "    data[b:b + 4] = struct.pack('<f', float('nan'))\n"
        "if key != '-':\n"
        "    stats = json.loads(head['__metadata__']['stats']); stats[key] = float(value)\n"
        "    head['__metadata__']['stats'] = json.dumps(stats)\n"
        "text = json.dumps(head).encode(); text += b' ' * (-len(text) % 8)\n"
        "open(dst, 'wb').write(struct.pack('<Q', len(text)) + text + bytes(data))\n"
        "EOF",
        g_tmp, src, dst, tensor ? tensor : "-", stat_key ? stat_key : "-", stat_value);
}

static void test_nan_weight_refused_and_nan_score_is_error(void) {
    CHECK(patch_model("runs/m/model.safetensors", "nan.safetensors", "base.pos_embed.row_embed.weight", NULL, 0) == 0);
    int rc = drdc("nan.log", "infer --model nan.safetensors --image '%s' --json nan.json --threads 2", g_img);
    CHECK(rc == 2);
    CHECK(log_has("nan.log", "base.pos_embed.row_embed.weight") && log_has("nan.log", "holds nan"));
    CHECK(test_system("test ! -e '%s/nan.json'", g_tmp) == 0);   /* nothing was judged */
    rc = drdc("nan_base.log", "infer --model nan.safetensors --image '%s' --json nan.json --method base --threads 2",
              g_img);
    CHECK(rc == 2);
    /* statistics that overflow the map to infinity: the score is not finite, the verdict is error */
    CHECK(patch_model("runs/m/model.safetensors", "inf.safetensors", NULL, "fuse_base_std", 1e-300) == 0);
    rc = drdc("inf.log", "infer --model inf.safetensors --image '%s' --json inf.json --threads 2", g_img);
    CHECK(rc == 3);
    cJSON *j = read_json("inf.json");
    CHECK(j && strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "verdict")), "error") == 0);
    CHECK(j && cJSON_IsNull(cJSON_GetObjectItem(j, "score")));
    cJSON_Delete(j);
    CHECK(test_system("cd '%s' && mkdir -p one && cp '%s' one/", g_tmp, g_img) == 0);
    rc = drdc("inf_dir.log", "infer --model inf.safetensors --images one --out-dir inf_out --threads 2");
    CHECK(rc == 3);
    CHECK(test_system("grep -q ',error,' '%s/inf_out/scores.csv'", g_tmp) == 0);
    CHECK(test_system("grep -q ',normal,' '%s/inf_out/scores.csv'", g_tmp) != 0);
}

static void test_long_paths_refused(void) {
    char longp[1200];
    memset(longp, 'x', 1100);
    longp[0] = 'r', longp[1100] = '\0';
    int rc = drdc("long_out.log", "train --config tiny.json --data-root '%s' --out '%s' --threads 2 %s", g_data, longp,
                  SETS);
    CHECK(rc == 2);
    CHECK(log_has("long_out.log", "--out is 1100 bytes long") && log_has("long_out.log", "nothing is cut"));
    rc = drdc("long_root.log", "train --config tiny.json --data-root '%s' --out runs/lr --threads 2 %s", longp, SETS);
    CHECK(rc == 2);
    CHECK(log_has("long_root.log", "--data-root is 1100 bytes long"));
    CHECK(test_system("test ! -e '%s/runs/lr'", g_tmp) == 0);
}

static void test_one_run_per_folder(void) {
    /* the first run holds the folder for at least 10 s whatever the machine's speed: 10 refiner steps,
     * a checkpoint after each, every checkpoint write held 1 s by the test hook */
    int rc = test_system("cd '%s' && (DRDC_TEST_CHECKPOINT_DELAY_MS=1000 '%s' train --config tiny.json --data-root '%s' "
                         "--out runs/busy --threads 1 %s --set refiner.steps=10 --set train.checkpoint_every=1 "
                         "> busy1.log 2>&1; echo $? > busy1.rc) & "
                         "for i in $(seq 1 100); do test -s runs/busy/.lock && break; sleep 0.1; done; sleep 0.5",
                         g_tmp, test_drdc_bin(), g_data, SETS);
    CHECK(rc == 0);
    rc = drdc("busy2.log", "train --config tiny.json --data-root '%s' --out runs/busy --threads 1 %s --force", g_data,
              SETS);
    CHECK(rc == 2);
    CHECK(log_has("busy2.log", "is in use by another drdc train (pid"));
    CHECK(test_system("cd '%s' && for i in $(seq 1 600); do test -f busy1.rc && break; sleep 0.5; done; "
                      "test \"$(cat busy1.rc)\" = 0", g_tmp) == 0);
    /* the lock of a finished (or dead) run is taken over */
    rc = drdc("busy3.log", "train --config tiny.json --data-root '%s' --out runs/busy --threads 1 %s --resume", g_data,
              SETS);
    CHECK(rc == 0);
}

static void test_same_image_same_score_anywhere(void) {
    CHECK(test_system("cd '%s' && rm -rf same && mkdir same && for n in a b c d e; do cp '%s' same/$n.png; done && "
                      "cp '%s/weave/test/good/001.png' same/b.png && cp '%s/disc/test/good/001.png' same/d.png",
                      g_tmp, g_img, g_data, g_data) == 0);
    int rc = drdc("same.log", "infer --images same --out-dir same_out --jsonl same.jsonl --threads 2 --set infer.batch=3");
    CHECK(rc == 0);
    rc = drdc("alone.log", "infer --image '%s' --json alone.json --out alone_heat.png --threads 2", g_img);
    CHECK(rc == 0);
    cJSON *alone = read_json("alone.json");
    double s0 = cJSON_GetNumberValue(cJSON_GetObjectItem(alone, "score"));
    cJSON_Delete(alone);
    char path[2048], *text = NULL;
    size_t n = 0;
    snprintf(path, sizeof path, "%s/same.jsonl", g_tmp);
    CHECK_OK(drdc_read_file(path, &text, &n));
    int same = 0;
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        const char *img = cJSON_GetStringValue(cJSON_GetObjectItem(o, "image"));
        if (img && (!strcmp(img, "a.png") || !strcmp(img, "c.png") || !strcmp(img, "e.png"))) {
            CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "score")) == s0);   /* bit for bit */
            same++;
        }
        cJSON_Delete(o);
    }
    free(text);
    CHECK(same == 3);
    /* and the same heatmap, byte for byte */
    CHECK(test_system("cd '%s' && cmp -s same_out/a.png.heat.png alone_heat.png && cmp -s same_out/c.png.heat.png "
                      "alone_heat.png && cmp -s same_out/e.png.heat.png alone_heat.png", g_tmp) == 0);
}

static void test_fifo_inputs_refused(void) {
    CHECK(test_system("cd '%s' && rm -f f.png f.safetensors && mkfifo f.png f.safetensors", g_tmp) == 0);
    int rc = test_system("cd '%s' && timeout 60 '%s' infer --image f.png --json f.json --threads 2 > fifo1.log 2>&1",
                         g_tmp, test_drdc_bin());
    CHECK(rc == 2);   /* 124 would mean it hung until the timeout */
    CHECK(log_has("fifo1.log", "f.png: is a FIFO, not a regular file"));
    rc = test_system("cd '%s' && timeout 60 '%s' infer --model f.safetensors --image '%s' --json f.json --threads 2 "
                     "> fifo2.log 2>&1", g_tmp, test_drdc_bin(), g_img);
    CHECK(rc == 2);
    CHECK(log_has("fifo2.log", "f.safetensors: is a FIFO"));
}

static void test_no_validation_refused_before_training(void) {
    int rc = drdc("val0.log", "train --config tiny.json --data-root '%s' --out runs/val0 --threads 2 %s "
                  "--set data.val_fraction=0", g_data, SETS);
    CHECK(rc == 2);
    CHECK(log_has("val0.log", "no validation images"));
    CHECK(!log_has("val0.log", "train base (images)"));   /* refused before a step */
    CHECK(test_system("test ! -e '%s/runs/val0/checkpoint.safetensors'", g_tmp) == 0);
}

static void test_sigint_leaves_no_temp_file(void) {
    /* every atomic write waits 3 s before its rename: SIGINT after 1.5 s lands while the first
     * output's temporary file exists */
    int rc = test_system("cd '%s' && rm -rf int_out && mkdir int_out && (DRDC_TEST_WRITE_DELAY_MS=3000 '%s' infer "
                         "--image '%s' --out int_out/h.png --overlay int_out/o.png --threads 2 > int.log 2>&1 & "
                         "pid=$!; sleep 1.5; "
                         "for i in $(seq 1 60); do ls -a int_out | grep -q '^.tmp.' && break; sleep 0.5; done; "
                         "ls -a int_out > int_before.txt; kill -INT $pid; wait $pid; echo $? > int.rc)",
                         g_tmp, test_drdc_bin(), g_img);
    CHECK(rc == 0);
    CHECK(test_system("grep -q '^.tmp.' '%s/int_before.txt'", g_tmp) == 0);   /* a temporary file existed */
    CHECK(test_system("test \"$(cat '%s/int.rc')\" = 130", g_tmp) == 0);
    CHECK(test_system("test -z \"$(ls -a '%s/int_out' | grep '.tmp.')\"", g_tmp) == 0);
    CHECK(log_has("int.log", "interrupted"));
}

static void test_long_output_name(void) {
    char name[300];
    memset(name, 'n', 249);
    memcpy(name + 249, ".json", 6);   /* 254 characters */
    CHECK(strlen(name) == 254);
    CHECK(test_system("mkdir -p '%s/names'", g_tmp) == 0);
    int rc = drdc("name254.log", "infer --image '%s' --json 'names/%s' --threads 2", g_img, name);
    CHECK(rc == 0);
    char path[2048];
    snprintf(path, sizeof path, "%s/names/%s", g_tmp, name);
    CHECK(drdc_is_file(path));
}

static void test_divergence_before_any_checkpoint(void) {
    /* AdamW with lr 10 and weight decay 10 blows the base weights up within two epochs; the default
     * train.checkpoint_every writes no checkpoint before that */
    int rc = drdc("div.log", "train --config tiny.json --data-root '%s' --out runs/div --threads 2 %s "
                  "--set base.epochs=3 --set base.lr=10 --set base.weight_decay=10", g_data, SETS);
    CHECK(rc == 1);
    CHECK(log_has("div.log", "the loss became"));
    CHECK(log_has("div.log", "no checkpoint had been written yet"));
    CHECK(!log_has("div.log", "checkpoint is kept") && !log_has("div.log", "is kept;"));
    CHECK(test_system("test ! -e '%s/runs/div/checkpoint.safetensors'", g_tmp) == 0);
}

int main(void) {
    if (!test_drdc_bin()) test_skip("DRDC_BIN not set (run under ctest)");
    snprintf(g_tmp, sizeof g_tmp, "%s", test_tmpdir("failclosed"));
    snprintf(g_data, sizeof g_data, "%s/data", g_tmp);
    snprintf(g_img, sizeof g_img, "%s/disc/test/good/000.png", g_data);
    if (test_system("'%s' synth --out '%s' --categories 4 --train 4 --test 4 --size 64 --seed 13 >/dev/null",
                    test_drdc_bin(), g_data) != 0 ||
        test_system("mkdir -p '%s/configs' && cp '%s/configs/tiny.json' '%s/configs/'", g_tmp, test_source_dir(),
                    g_tmp) != 0 ||
        drdc("train.log", "train --config tiny.json --data-root '%s' --out runs/m --threads 2 %s", g_data, SETS) != 0) {
        fprintf(stderr, "set-up failed\n");
        test_system("cat '%s/train.log'", g_tmp);
        return 1;
    }
    RUN(test_nan_weight_refused_and_nan_score_is_error);
    RUN(test_long_paths_refused);
    RUN(test_one_run_per_folder);
    RUN(test_same_image_same_score_anywhere);
    RUN(test_fifo_inputs_refused);
    RUN(test_no_validation_refused_before_training);
    RUN(test_sigint_leaves_no_temp_file);
    RUN(test_long_output_name);
    RUN(test_divergence_before_any_checkpoint);
    return test_summary();
}
