/* stb_impl.c: the stb_image / stb_image_write implementations, compiled here where no prebuilt
 * ones are linked: into drdc_core when CMake finds no libstb (Debian's libstb-dev ships them),
 * and always into the fuzz targets, so that the decoders behind drdc_image_load_* carry the
 * fuzzer's coverage instrumentation and ASan checks (the prebuilt libstb has neither). */
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "stb_image.h"
#include "stb_image_write.h"
