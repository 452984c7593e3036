// libFuzzer entry point for nordf_fuzz::mat (see targets.h); built with -DNORDF_FUZZ=ON.
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return nordf_fuzz::mat(data, size); }
