/* stb_impl.c: the stb_image / stb_image_write implementations compiled into the fuzz targets,
 * so that the decoders behind drdc_image_load_* carry the fuzzer's coverage instrumentation
 * and ASan checks (Debian's prebuilt libstb has neither). Fuzz builds only. */
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "stb_image.h"
#include "stb_image_write.h"
