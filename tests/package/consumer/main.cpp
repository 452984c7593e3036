// A downstream program: composes NordF through the installed public headers only.
#include <libnordf/nordf.h>

#include <iostream>

int main() {
  auto model = nordf::NordF(nordf::NordFOptions()
                                .backbone("convnextv2_atto")
                                .image_size(32)
                                .channels(32)
                                .num_classes(3)
                                .classifier_hidden({16})
                                .recon_size(16)
                                .decoder_width(16));
  auto x = torch::rand({2, 3, 32, 32});
  auto out = model->forward(x, x.flip(0));
  if (out.logits1.sizes() != torch::IntArrayRef({2, 3})) return 1;
  std::cout << "consumer ok: libnordf " << NORDF_VERSION_STRING << ", d = " << out.dissimilarity << "\n";
  return 0;
}
