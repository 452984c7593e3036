// stb_image_write (Debian's libstb-dev), compiled once, here. libnordf writes PNGs with it; the
// tests also write JPEGs and BMPs. Its JPEG encoder left-shifts negative ints, which C++20 and GCC
// define as two's complement; the sanitizer build therefore compiles this file without UBSan's
// shift-base check (libnordf/CMakeLists.txt).
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
