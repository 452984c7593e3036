// libFuzzer entry point for nordf_fuzz::state_dict (see targets.h); built with -DNORDF_FUZZ=ON.
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return nordf_fuzz::state_dict(data, size); }
