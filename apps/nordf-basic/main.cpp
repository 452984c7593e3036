// nordf-basic: builds the default NORD-F configuration and prints its summary.
#include <libnordf/nordf.h>

#include <fmt/core.h>

#include <exception>

int main() {
  try {
    auto options = nordf::NordFOptions().backbone("convnextv2_atto").image_size(32).num_classes(5).channels(256);
    nordf::NordF model(options);
    int64_t params = 0;
    for (auto& p : model->parameters()) params += p.numel();
    fmt::print("libnordf {} | BLAS: {}\n", NORDF_VERSION_STRING, nordf::loaded_blas_library());
    fmt::print("NordF: backbone {} ({} channels), branch width {}, features {}x{}, reconstruction {}px, {} parameters\n",
               options.backbone(), model->backbone->out_channels(), options.channels(), model->feature_size(),
               model->feature_size(), model->recon_size(), params);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "nordf-basic: error: {}\n", e.what());
    return 1;
  }
}
