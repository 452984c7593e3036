// nordf-basic: train NORD-F on an open-set split (Fashion-MNIST by default), then evaluate it
// against the OOD baselines.
#include "../common/pipeline.h"

int main(int argc, char** argv) {
  return nordf::app::main_guard(
      argc, argv,
      {"nordf-basic",
       "nordf-basic: train NORD-F on an open-set split, then evaluate ID accuracy and OOD detection.\n"
       "With no arguments: Fashion-MNIST (ID classes 0-4), convnextv2_atto at 32 px, 3 epochs.",
       "basic", nlohmann::json::object(), nullptr});
}
