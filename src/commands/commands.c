/* commands.c: the table of drdc subcommands and the --version text. */
#include "drdc/commands/commands.h"
#include "drdc/core/sysinfo.h"
#include "drdc/model/dist.h"
#include "drdc/model/model.h"
#include "drdc/shim/shim.h"

static const drdc_command_entry COMMANDS[] = {
    {"train", "train the base model and the diffusion refiner on normal images", drdc_cmd_train, drdc_train_spec},
    {"infer", "score images and write full-resolution heatmaps", drdc_cmd_infer, drdc_infer_spec},
    {"eval", "exact per-category metrics on a labelled test set", drdc_cmd_eval, drdc_eval_spec},
    {"synth", "write the built-in synthetic demo dataset", drdc_cmd_synth, drdc_synth_spec},
    {"backbone", "check pretrained backbone weights: ImageNet top-k of an image", drdc_cmd_backbone, drdc_backbone_spec},
    {"convert", "convert a PyTorch .pth state dict to safetensors", drdc_cmd_convert, drdc_convert_spec},
    {"bench", "measure speed stage by stage (scripts/bench/bench.py compares with PyTorch)", drdc_cmd_bench, drdc_bench_spec},
};

const drdc_command_entry *drdc_commands(int *n) {
    *n = (int)(sizeof COMMANDS / sizeof COMMANDS[0]);
    return COMMANDS;
}

void drdc_print_version(FILE *f) {
    fprintf(f, "drdc %s\nlibtorch %s\n", DRDC_VERSION, dt_torch_version());
    int n = dt_cuda_available() ? dt_cuda_device_count() : 0;
    fprintf(f, "devices: cpu");
    for (int i = 0; i < n; i++) fprintf(f, ", cuda:%d", i);
    fprintf(f, "%s\n", n ? "" : " (no CUDA device seen)");
    fprintf(f, "distributed training: %s\n",
            !drdc_dist_compiled() ? "no (built without c10d: one process only)"
            : drdc_dist_nccl_compiled() ? "c10d, Gloo (CPU) and NCCL (CUDA)" : "c10d, Gloo (CPU and CUDA tensors)");
    fprintf(f, "allocator: %s\n", drdc_allocator_name());
    char cpu[256];
    fprintf(f, "CPU: %s\n", drdc_cpu_model(cpu, sizeof cpu));
    fprintf(f, "CPU kernels: %s\n", drdc_model_cpu_kernels());
}
