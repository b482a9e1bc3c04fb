/* cmd_infer.c: `drdc infer`: scores images and writes full-resolution heatmaps. */
#include "drdc/commands.h"
#include "drdc/runtime.h"

#include <stdio.h>
#include <string.h>

static struct {
    const char *model, *image, *images, *out, *out_dir, *overlay, *json, *method, *grids, *scales, *device;
    int steps, tau, threads;
    double alpha;
} A;

static const drdc_option OPTIONS[] = {
    {"--model", "FILE", DRDC_OPT_STRING, &A.model, "trained model", "runs/latest/model.safetensors", 0, 0},
    {"--image", "FILE", DRDC_OPT_STRING, &A.image, "one image to score", NULL, 0, 0},
    {"--out", "FILE", DRDC_OPT_STRING, &A.out, "heatmap PNG for --image", NULL, 0, 0},
    {"--overlay", "FILE", DRDC_OPT_STRING, &A.overlay, "heatmap drawn over the image, PNG", NULL, 0, 0},
    {"--json", "FILE", DRDC_OPT_STRING, &A.json, "score, threshold, verdict and timings as JSON", NULL, 0, 0},
    {"--images", "DIR", DRDC_OPT_STRING, &A.images, "a folder of images to score", NULL, 0, 0},
    {"--out-dir", "DIR", DRDC_OPT_STRING, &A.out_dir, "output folder for --images (heatmaps, scores.csv)", NULL, 0, 0},
    {"--method", "M", DRDC_OPT_STRING, &A.method, "base | drdc", "drdc", 0, 0},
    {"--steps", "N", DRDC_OPT_INT, &A.steps, "DDIM steps (overrides infer.steps)", NULL, 1, 1000},
    {"--tau", "T", DRDC_OPT_INT, &A.tau, "start timestep (overrides infer.tau)", NULL, 1, 100000},
    {"--grids", "LIST", DRDC_OPT_STRING, &A.grids, "grid sizes, e.g. 8,16 (overrides infer.grids)", NULL, 0, 0},
    {"--scales", "LIST", DRDC_OPT_STRING, &A.scales, "scales, e.g. 1,0.5,0.25 (overrides infer.scales)", NULL, 0, 0},
    {"--alpha", "A", DRDC_OPT_DOUBLE, &A.alpha, "weight of the diffusion map (overrides infer.alpha)", NULL, 0, 1},
    {"--device", "D", DRDC_OPT_STRING, &A.device, "cpu | cuda | cuda:N | auto", "auto", 0, 0},
    {"--threads", "N", DRDC_OPT_INT, &A.threads, "CPU threads (0 = all cores)", "0", 0, 4096},
};

static const drdc_command SPEC = {
    "infer", "drdc infer [--model FILE] (--image FILE --out heat.png | --images DIR --out-dir DIR) [options]",
    "Score images with a trained model: an anomaly score, a verdict against the calibrated\n"
    "threshold, and a heatmap at the image's original size on a fixed colour scale.",
    OPTIONS, (int)(sizeof OPTIONS / sizeof OPTIONS[0])};

const drdc_command *drdc_infer_spec(void) { return &SPEC; }

int drdc_cmd_infer(int argc, char **argv) {
    memset(&A, 0, sizeof A);
    A.alpha = -1;
    int help = 0;
    drdc_status st = drdc_cli_parse(&SPEC, argc, argv, &help);
    if (st) return drdc_cli_report("infer", st);
    if (help) {
        drdc_cli_print_help(stdout, &SPEC);
        return 0;
    }
    if (!A.image == !A.images)
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "give exactly one of --image FILE or --images DIR"));
    if (A.image && !A.out && !A.json)
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "--image needs --out FILE (or --json FILE)"));
    if (A.images && !A.out_dir)
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "--images needs --out-dir DIR"));
    if (A.method && strcmp(A.method, "base") && strcmp(A.method, "drdc"))
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "--method must be base or drdc, not '%s'", A.method));
    drdc_runtime rt;
    st = drdc_runtime_init(&rt, A.device, A.threads);
    if (st) return drdc_cli_report("infer", st);
    return drdc_cli_report("infer", drdc_fail(DRDC_ERR_STATE, "inference is not built yet"));
}
