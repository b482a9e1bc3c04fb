/* cmd_convert.c: `drdc convert`: a PyTorch .pth state dict (zip or legacy format) to safetensors,
 * so users can bring weights such as UniAD's efficientnet-b4-6ed6700e.pth. */
#include "drdc/commands/commands.h"
#include "drdc/formats/pth.h"

#include <stdio.h>
#include <string.h>

static struct {
    const char *in, *out;
} A;

static const drdc_option OPTIONS[] = {
    {"--in", "FILE.pth", DRDC_OPT_STRING, &A.in, "PyTorch state dict (torch.save, zip or legacy format)", NULL, 0, 0},
    {"--out", "FILE.safetensors", DRDC_OPT_STRING, &A.out, "safetensors file to write", NULL, 0, 0},
};

static const drdc_command SPEC = {
    "convert", "drdc convert --in FILE.pth --out FILE.safetensors",
    "Convert a PyTorch state dict to safetensors without Python: every tensor keeps its name\n"
    "(nested dicts are joined with '.'), dtype and shape; non-tensor entries are skipped.",
    OPTIONS, (int)(sizeof OPTIONS / sizeof OPTIONS[0])};

const drdc_command *drdc_convert_spec(void) { return &SPEC; }

int drdc_cmd_convert(int argc, char **argv) {
    memset(&A, 0, sizeof A);
    int rc = drdc_cli_begin(&SPEC, argc, argv);
    if (rc >= 0) return rc;
    drdc_status st;
    if (!A.in || !A.out)
        return drdc_cli_report("convert", drdc_fail(DRDC_ERR_USAGE, "--in FILE.pth and --out FILE.safetensors are required"));
    int n = 0, skipped = 0;
    st = drdc_pth_to_safetensors(A.in, A.out, &n, &skipped);
    if (st) return drdc_cli_report("convert", st);
    printf("wrote %d tensors to %s", n, A.out);
    if (skipped) printf(" (%d non-tensor entries skipped)", skipped);
    printf("\n");
    return 0;
}
