/* test_config.c: config defaults, loading the shipped configs, error messages (unknown key, wrong
 * type, out of range, JSON syntax with line:column), --set overrides, cross-key rules (the core's
 * and, through drdc_model_check_config, each stage's), the serialisation round trip and
 * drdc_config_find. */
#include "testlib.h"

#include "drdc/core/config.h"
#include "drdc/model/model.h"

#include <cjson/cJSON.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *write_tmp(const char *test, const char *file, const char *text) {
    static char path[1400];
    const char *dir = test_tmpdir(test);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (test_write_file(path, text, strlen(text)) != 0) fprintf(stderr, "cannot write %s\n", path);
    return path;
}

static drdc_status parse_text(drdc_config *c, const char *text) {
    drdc_config_defaults(c);
    return drdc_config_parse(c, text, "bad.json");
}

/* parse_text, then every rule of the model and its stages */
static drdc_status check_text(drdc_config *c, const char *text) {
    drdc_status st = parse_text(c, text);
    return st ? st : drdc_model_check_config(c);
}

/* drdc_config_set, then every rule of the model and its stages */
static drdc_status check_set(drdc_config *c, const char *assignment) {
    drdc_status st = drdc_config_set(c, assignment);
    return st ? st : drdc_model_check_config(c);
}

static void test_defaults_valid(void) {
    drdc_config c;
    drdc_config_defaults(&c);
    CHECK_OK(drdc_model_check_config(&c));
    /* a few defaults documented in config.h */
    CHECK(c.data.image_size == 224 && strcmp(c.data.dataset, "mvtec") == 0);
    CHECK(c.base.hidden == 256 && c.base.heads == 8 && c.base.neighbor_mask == 7);
    CHECK(c.refiner.n_mult == 6 && c.refiner.channel_mult[5] == 4 && c.refiner.n_attention == 3);
    CHECK(c.refiner.max_train_t == c.refiner.timesteps);
    CHECK(c.infer.n_grids == 2 && c.infer.grids[1] == 16 && c.infer.n_scales == 3 && c.infer.scales[2] == 0.25);
    CHECK(strcmp(c.infer.standardize, "normal") == 0 && c.train.bf16 == 0 && c.backbone.n_blocks == 0);
}

static void load_shipped(const char *file, drdc_config *c) {
    char path[1200];
    snprintf(path, sizeof path, "%s/configs/%s", test_source_dir(), file);
    drdc_config_defaults(c);
    CHECK_OK(drdc_config_load(c, path));
    CHECK_OK(drdc_model_check_config(c));
}

static void test_shipped_configs_load(void) {
    drdc_config c;
    load_shipped("mvtec.json", &c);
    CHECK(strcmp(c.name, "mvtec") == 0);
    CHECK(strcmp(c.backbone.arch, "efficientnet-b4") == 0 && c.backbone.n_blocks == 4 && c.backbone.blocks[3] == 21);
    CHECK(c.data.image_size == 224 && c.base.epochs == 1000 && c.refiner.channels == 128);
    load_shipped("tiny.json", &c);
    CHECK(strcmp(c.name, "tiny") == 0);
    CHECK(c.data.image_size == 64 && c.refiner.image_size == 64 && c.refiner.n_mult == 3);
    CHECK(strcmp(c.backbone.weights, "") == 0 && c.infer.steps == 3);
}

static void test_mvtec_json_lists_every_key(void) {
    /* configs/mvtec.json writes out every key: each key of the serialised defaults is in it */
    char path[1200];
    snprintf(path, sizeof path, "%s/configs/mvtec.json", test_source_dir());
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f) return;
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    drdc_config d;
    drdc_config_defaults(&d);
    char *json = drdc_config_to_json(&d);
    cJSON *file = cJSON_Parse(text), *defaults = json ? cJSON_Parse(json) : NULL;
    CHECK(file && defaults);
    int keys = 0;
    for (const cJSON *sec = defaults ? defaults->child : NULL; sec; sec = sec->next) {
        const cJSON *fsec = cJSON_GetObjectItemCaseSensitive(file, sec->string);
        CHECK(fsec != NULL);
        if (!cJSON_IsObject(sec)) continue;
        for (const cJSON *k = sec->child; k; k = k->next, keys++) {
            if (!fsec || !cJSON_GetObjectItemCaseSensitive(fsec, k->string)) {
                fprintf(stderr, "mvtec.json lacks %s.%s\n", sec->string, k->string);
                tl_failures++;
            }
        }
    }
    CHECK(keys > 50);
    cJSON_Delete(file);
    cJSON_Delete(defaults);
    free(json);
}

static void test_name_from_file(void) {
    drdc_config c;
    drdc_config_defaults(&c);
    const char *p = write_tmp("cfg_name", "my-run.json", "{\"data\": {\"image_size\": 128}}");
    CHECK_OK(drdc_config_load(&c, p));
    CHECK(strcmp(c.name, "my-run") == 0 && c.data.image_size == 128);
    p = write_tmp("cfg_name2", "other.json", "{\"name\": \"explicit\"}");
    CHECK_OK(drdc_config_load(&c, p));
    CHECK(strcmp(c.name, "explicit") == 0);
}

static void test_unknown_key(void) {
    drdc_config c;
    drdc_config_defaults(&c);
    const char *p = write_tmp("cfg_unknown", "bad.json", "{\"base\": {\"hiden\": 3}}");
    CHECK_ERR(drdc_config_load(&c, p), DRDC_ERR_CONFIG, "unknown key 'base.hiden'");
    CHECK(tl_contains(drdc_last_error(), p));
    CHECK(tl_contains(drdc_last_error(), "did you mean 'base.hidden'"));
    CHECK_ERR(parse_text(&c, "{\"bse\": {}}"), DRDC_ERR_CONFIG, "unknown key 'bse'");
    CHECK_ERR(parse_text(&c, "{\"refiner\": {\"epochs\": 3}}"), DRDC_ERR_CONFIG, "did you mean 'base.epochs'");
    CHECK_ERR(parse_text(&c, "{\"zzzzzzzzzzzz\": 1}"), DRDC_ERR_CONFIG, "unknown key 'zzzzzzzzzzzz'");
    CHECK(!tl_contains(drdc_last_error(), "did you mean"));
    CHECK_ERR(parse_text(&c, "{\"base\": {\"hidden\": 128, \"hidden\": 64}}"), DRDC_ERR_CONFIG, "given twice");
}

static void test_wrong_type(void) {
    drdc_config c;
    CHECK_ERR(parse_text(&c, "{\"base\": {\"hidden\": \"big\"}}"), DRDC_ERR_CONFIG, "'base.hidden' expects an integer");
    CHECK(tl_contains(drdc_last_error(), "got string \"big\""));
    CHECK(tl_contains(drdc_last_error(), "bad.json"));
    CHECK_ERR(parse_text(&c, "{\"base\": {\"hidden\": 2.5}}"), DRDC_ERR_CONFIG, "got number 2.5");
    CHECK_ERR(parse_text(&c, "{\"infer\": {\"grids\": [8, \"x\"]}}"), DRDC_ERR_CONFIG, "index 1");
    CHECK_ERR(parse_text(&c, "{\"train\": {\"bf16\": 1}}"), DRDC_ERR_CONFIG, "'train.bf16' expects a boolean");
    CHECK_ERR(parse_text(&c, "{\"data\": {\"root\": 5}}"), DRDC_ERR_CONFIG, "'data.root' expects a string");
    CHECK_ERR(parse_text(&c, "{\"base\": 5}"), DRDC_ERR_CONFIG, "'base' must be an object");
    CHECK_ERR(parse_text(&c, "[1, 2]"), DRDC_ERR_CONFIG, "must be a JSON object");
}

static void test_out_of_range(void) {
    drdc_config c;
    CHECK_ERR(parse_text(&c, "{\"base\": {\"dropout\": 1.5}}"), DRDC_ERR_CONFIG, "'base.dropout' = 1.5");
    CHECK(tl_contains(drdc_last_error(), "[0, 1)"));
    CHECK_ERR(parse_text(&c, "{\"data\": {\"workers\": 0}}"), DRDC_ERR_CONFIG, "'data.workers' = 0 is out of range [1,");
    CHECK_ERR(parse_text(&c, "{\"infer\": {\"scales\": [1, 0]}}"), DRDC_ERR_CONFIG, "(0, 1]");
    CHECK_ERR(parse_text(&c, "{\"infer\": {\"grids\": []}}"), DRDC_ERR_CONFIG, "at least one");
    CHECK_ERR(parse_text(&c, "{\"data\": {\"dataset\": \"imagenet\"}}"), DRDC_ERR_CONFIG, "not one of");
    CHECK_ERR(parse_text(&c, "{\"base\": {\"epochs\": 1e12}}"), DRDC_ERR_CONFIG, "out of range");
}

static void test_syntax_error_position(void) {
    drdc_config c;
    drdc_config_defaults(&c);
    const char *text = "{\n  \"data\": {\n    \"image_size\": 64\n    \"root\": \"x\"\n  }\n}\n";
    const char *p = write_tmp("cfg_syntax", "broken.json", text);
    CHECK_ERR(drdc_config_load(&c, p), DRDC_ERR_CONFIG, "broken.json:4:5");
    CHECK(tl_contains(drdc_last_error(), "syntax"));
    CHECK_ERR(parse_text(&c, "{\"a\": tru}"), DRDC_ERR_CONFIG, "bad.json:1:7");
}

static void test_set_values(void) {
    drdc_config c;
    drdc_config_defaults(&c);
    CHECK_OK(drdc_config_set(&c, "base.hidden=128"));
    CHECK(c.base.hidden == 128);
    CHECK_OK(drdc_config_set(&c, "infer.alpha=0.5"));
    CHECK(c.infer.alpha == 0.5);
    CHECK_OK(drdc_config_set(&c, "infer.grids=4,8"));
    CHECK(c.infer.n_grids == 2 && c.infer.grids[0] == 4 && c.infer.grids[1] == 8);
    CHECK_OK(drdc_config_set(&c, "infer.scales=[1, 0.25]"));
    CHECK(c.infer.n_scales == 2 && c.infer.scales[1] == 0.25 && c.infer.scales[2] == 0.0);
    CHECK_OK(drdc_config_set(&c, "infer.grids=16"));
    CHECK(c.infer.n_grids == 1 && c.infer.grids[0] == 16 && c.infer.grids[1] == 0);
    CHECK_OK(drdc_config_set(&c, "data.root=/data/mvtec ad"));
    CHECK(strcmp(c.data.root, "/data/mvtec ad") == 0);
    CHECK_OK(drdc_config_set(&c, "name=123"));
    CHECK(strcmp(c.name, "123") == 0);
    CHECK_OK(drdc_config_set(&c, "data.categories=bottle,cable"));
    CHECK(c.data.n_categories == 2 && strcmp(c.data.categories[1], "cable") == 0);
    CHECK_OK(drdc_config_set(&c, "train.bf16=true"));
    CHECK(c.train.bf16 == 1);
    CHECK_OK(drdc_config_set(&c, "train.out="));
    CHECK(strcmp(c.train.out, "") == 0);
    CHECK_ERR(drdc_config_set(&c, "infer.grids=8,x"), DRDC_ERR_CONFIG, "index 1");
    CHECK_ERR(drdc_config_set(&c, "base.hidden=abc"), DRDC_ERR_CONFIG, "expects an integer");
    CHECK_ERR(drdc_config_set(&c, "name="), DRDC_ERR_CONFIG, "name must not be empty");
}

static void test_set_unknown_and_malformed(void) {
    drdc_config c, before;
    drdc_config_defaults(&c);
    memcpy(&before, &c, sizeof c);
    CHECK_ERR(drdc_config_set(&c, "base.hiden=3"), DRDC_ERR_CONFIG, "unknown key 'base.hiden'");
    CHECK(tl_contains(drdc_last_error(), "base.hidden"));
    CHECK_ERR(drdc_config_set(&c, "base.hidden"), DRDC_ERR_CONFIG, "section.key=value");
    CHECK_ERR(drdc_config_set(&c, "data.image_size=100"), DRDC_ERR_CONFIG, "multiple of 16"); /* in range, not valid */
    CHECK(memcmp(&c, &before, sizeof c) == 0); /* failures change nothing */
}

static void test_cross_image_size(void) {
    drdc_config c;
    drdc_config_defaults(&c);
    CHECK_ERR(drdc_config_set(&c, "data.image_size=100"), DRDC_ERR_CONFIG, "data.image_size 100 is not a multiple of 16");
}

static void test_cross_heads(void) {
    drdc_config c;
    CHECK_ERR(check_text(&c, "{\"base\": {\"hidden\": 64, \"heads\": 3}}"), DRDC_ERR_CONFIG,
              "base.heads 3 does not divide base.hidden 64");
}

static void test_cross_grid(void) {
    drdc_config c;
    drdc_config_defaults(&c);
    CHECK_ERR(check_set(&c, "infer.grids=8,12"), DRDC_ERR_CONFIG, "12 does not divide refiner.image_size 224");
}

static void test_cross_middle_heads(void) {
    /* attention at 64 px (64 channels) is fine, but the middle block (3 x 32 = 96 channels) always has it */
    drdc_config c;
    CHECK_ERR(check_text(&c, "{\"refiner\": {\"channels\": 32, \"channel_mult\": [2, 3], \"image_size\": 64, "
                             "\"attention_res\": [64], \"head_channels\": 64}}"),
              DRDC_ERR_CONFIG, "does not divide the 96 channels of the U-Net's middle block");
}

static void test_resolve_validates_once(void) {
    /* keys that must change together can change together: each --set alone would be invalid */
    char path[2048], found[2048];
    snprintf(path, sizeof path, "%s/configs/tiny.json", test_source_dir());
    drdc_config c;
    const char *together[] = {"refiner.image_size=48", "refiner.attention_res=12"};
    CHECK_OK(drdc_config_resolve(&c, path, together, 2, found, sizeof found));
    CHECK_OK(drdc_model_check_config(&c));
    CHECK(c.refiner.image_size == 48 && c.refiner.attention_res[0] == 12);
    const char *alone[] = {"refiner.image_size=48"};
    CHECK_OK(drdc_config_resolve(&c, path, alone, 1, found, sizeof found));
    CHECK_ERR(drdc_model_check_config(&c), DRDC_ERR_CONFIG, "refiner.attention_res 16");
    const char *core_rule[] = {"data.image_size=72"};
    CHECK_ERR(drdc_config_resolve(&c, path, core_rule, 1, found, sizeof found), DRDC_ERR_CONFIG, "tiny.json with the --set options");
    const char *unknown[] = {"refiner.nope=1"};
    CHECK_ERR(drdc_config_resolve(&c, path, unknown, 1, found, sizeof found), DRDC_ERR_CONFIG, "refiner.nope");
}

static void test_cross_tau(void) {
    drdc_config c;
    drdc_config_defaults(&c);
    CHECK_ERR(check_set(&c, "infer.tau=1000"), DRDC_ERR_CONFIG, "infer.tau 1000 must be below refiner.timesteps");
}

static void test_cross_other_rules(void) {
    drdc_config c;
    CHECK_ERR(check_text(&c, "{\"infer\": {\"steps\": 300}}"), DRDC_ERR_CONFIG, "infer.steps 300 exceeds infer.tau");
    CHECK_ERR(check_text(&c, "{\"infer\": {\"filter\": 4}}"), DRDC_ERR_CONFIG, "infer.filter 4 must be odd");
    CHECK_ERR(check_text(&c, "{\"base\": {\"neighbor_mask\": 4}}"), DRDC_ERR_CONFIG, "neighbor_mask 4 must be odd");
    CHECK_OK(check_text(&c, "{\"base\": {\"neighbor_mask\": 0}}"));
    CHECK_ERR(check_text(&c, "{\"data\": {\"image_size\": 64}}"), DRDC_ERR_CONFIG, "hides every token");
    CHECK_ERR(check_text(&c, "{\"infer\": {\"K\": 197}}"), DRDC_ERR_CONFIG, "196 cells of the coarsest grid");
    CHECK_OK(check_text(&c, "{\"infer\": {\"K\": 196}}"));
    CHECK_ERR(check_text(&c, "{\"refiner\": {\"image_size\": 112}}"), DRDC_ERR_CONFIG, "not divisible by 32");
    CHECK_ERR(check_text(&c, "{\"refiner\": {\"attention_res\": [16]}}"), DRDC_ERR_CONFIG, "attention_res 16");
    CHECK_ERR(check_text(&c, "{\"backbone\": {\"arch\": \"resnet50\"}}"), DRDC_ERR_CONFIG, "backbone.arch 'resnet50'");
    CHECK_OK(check_text(&c, "{\"backbone\": {\"arch\": \"efficientnet-lite4\"}}"));
    CHECK_ERR(check_text(&c, "{\"backbone\": {\"arch\": \"efficientnet-b8\"}}"), DRDC_ERR_CONFIG, "not known");
    CHECK_ERR(check_text(&c, "{\"infer\": {\"standardize\": \"zscore\"}}"), DRDC_ERR_CONFIG, "normal/none");
    CHECK_ERR(check_text(&c, "{\"refiner\": {\"beta_start\": 0.03}}"), DRDC_ERR_CONFIG, "beta_start");
}

static void test_max_train_t_follows_timesteps(void) {
    drdc_config c;
    drdc_config_defaults(&c);
    CHECK_OK(drdc_config_set(&c, "refiner.timesteps=500"));
    CHECK(c.refiner.max_train_t == 500);
    CHECK_OK(parse_text(&c, "{\"refiner\": {\"max_train_t\": 300, \"timesteps\": 600}}"));
    CHECK(c.refiner.max_train_t == 300 && c.refiner.timesteps == 600);
    CHECK_OK(drdc_config_set(&c, "refiner.timesteps=700")); /* set explicitly: stays */
    CHECK(c.refiner.max_train_t == 300);
}

static void round_trip(const drdc_config *c) {
    char *json = drdc_config_to_json(c);
    CHECK(json != NULL);
    if (!json) return;
    drdc_config back;
    drdc_config_defaults(&back);
    CHECK_OK(drdc_config_parse(&back, json, "serialised"));
    CHECK(memcmp(c, &back, sizeof back) == 0);
    free(json);
}

static void test_serialisation_round_trip(void) {
    drdc_config c;
    drdc_config_defaults(&c);
    round_trip(&c);
    load_shipped("tiny.json", &c);
    round_trip(&c);
    load_shipped("mvtec.json", &c);
    CHECK_OK(drdc_config_set(&c, "data.categories=bottle,cable,\"quoted\""));
    CHECK_OK(drdc_config_set(&c, "infer.alpha=0.123456789012345678"));
    CHECK_OK(drdc_config_set(&c, "refiner.beta_start=1.5e-5"));
    CHECK_OK(drdc_config_set(&c, "train.bf16=true"));
    CHECK_OK(drdc_config_set(&c, "train.out=runs/\"x\"\\y"));
    round_trip(&c);
    /* stable order: the table's order, name first */
    char *json = drdc_config_to_json(&c);
    if (json) {
        const char *n = strstr(json, "\"name\""), *d = strstr(json, "\"data\""), *t = strstr(json, "\"train\"");
        CHECK(n && d && t && n < d && d < t);
        free(json);
    }
}

static void test_find(void) {
    const char *dir = test_tmpdir("cfg_find");
    char cwd[2048];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(test_system("mkdir -p '%s/configs' && echo '{}' > '%s/configs/x.json'", dir, dir) == 0);
    CHECK(chdir(dir) == 0);
    char out[1024];
    CHECK_OK(drdc_config_find("x.json", out, sizeof out));
    CHECK(strcmp(out, "configs/x.json") == 0);
    CHECK_OK(drdc_config_find("x", out, sizeof out));
    CHECK(strcmp(out, "configs/x.json") == 0);
    CHECK(test_system("echo '{}' > x.json") == 0);
    CHECK_OK(drdc_config_find("x.json", out, sizeof out)); /* the path as given wins */
    CHECK(strcmp(out, "x.json") == 0);
    CHECK_ERR(drdc_config_find("nope-config.json", out, sizeof out), DRDC_ERR_INPUT, "tried");
    CHECK(tl_contains(drdc_last_error(), "configs/nope-config.json"));
    CHECK(tl_contains(drdc_last_error(), "share/drdc/configs/nope-config.json"));
    CHECK_ERR(drdc_config_find("x.json", out, 4), DRDC_ERR_INPUT, "too long");
    CHECK(chdir(cwd) == 0);
}

/* A config stored in a model file before infer.start, infer.clip_x0 and refiner.ema_warmup existed
 * keeps what that model was trained and calibrated with (masked start, no clipping, no warm-up);
 * a config file without them gets the new defaults; a stored config that has them keeps them. */
static void test_stored_config_legacy_values(void) {
    const char *old = "{\"name\": \"old\", \"infer\": {\"tau\": 200}}";
    drdc_config fresh, stored, kept;
    drdc_config_defaults(&fresh);
    drdc_config_defaults(&stored);
    CHECK_OK(drdc_config_parse(&fresh, old, "old.json"));
    CHECK_OK(drdc_config_parse_stored(&stored, old, "old model"));
    CHECK(strcmp(fresh.infer.start, "image") == 0 && fresh.refiner.ema_warmup == 1 && fresh.infer.clip_x0 == 0);
    CHECK(strcmp(stored.infer.start, "masked") == 0 && stored.refiner.ema_warmup == 0 && stored.infer.clip_x0 == 0);
    CHECK(stored.infer.tau == 200);
    const char *now = "{\"infer\": {\"start\": \"image\", \"clip_x0\": true}, \"refiner\": {\"ema_warmup\": true}}";
    drdc_config_defaults(&kept);
    CHECK_OK(drdc_config_parse_stored(&kept, now, "new model"));
    CHECK(strcmp(kept.infer.start, "image") == 0 && kept.refiner.ema_warmup == 1 && kept.infer.clip_x0 == 1);
    CHECK_ERR(drdc_config_set(&kept, "infer.start=noise"), DRDC_ERR_CONFIG, "infer.start");
}

int main(void) {
    RUN(test_defaults_valid);
    RUN(test_shipped_configs_load);
    RUN(test_mvtec_json_lists_every_key);
    RUN(test_name_from_file);
    RUN(test_unknown_key);
    RUN(test_wrong_type);
    RUN(test_out_of_range);
    RUN(test_syntax_error_position);
    RUN(test_set_values);
    RUN(test_set_unknown_and_malformed);
    RUN(test_cross_image_size);
    RUN(test_cross_heads);
    RUN(test_cross_grid);
    RUN(test_cross_middle_heads);
    RUN(test_resolve_validates_once);
    RUN(test_cross_tau);
    RUN(test_cross_other_rules);
    RUN(test_max_train_t_follows_timesteps);
    RUN(test_serialisation_round_trip);
    RUN(test_find);
    RUN(test_stored_config_legacy_values);
    return test_summary();
}
