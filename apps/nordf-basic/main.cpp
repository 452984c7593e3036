// nordf-basic: train NORD-F on an open-set split (Fashion-MNIST by default), then evaluate it
// against the OOD baselines.
#include "../common/pipeline.h"

int main(int argc, char** argv) {
  return nordf::app::guarded("nordf-basic", [&] { return nordf::app::run_pipeline(argc, argv); });
}
