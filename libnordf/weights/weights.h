#pragma once
/// @file
/// Loading pretrained weights that users bring: PyTorch checkpoints (zip and legacy formats)
/// and .safetensors, in torchvision, official ConvNeXt-V2 and timm key layouts.

#include <libnordf/core/limits.h>

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace nordf {

/// Options of `load_weights`.
struct LoadWeightsOptions {
  /// Strict: every parameter/buffer of the module must be loaded from the file and every tensor
  /// of the file must be used, except heads that a feature extractor drops (`classifier.*`,
  /// `head.*`, `norm.*`, `fc.*`), which are reported as skipped. Non-strict loads what matches, leaves
  /// the rest at init and reports both.
  TORCH_ARG(bool, strict) = true;
  /// Bounds on what the file may make the reader allocate (see `read_state_dict`).
  TORCH_ARG(ReadLimits, limits) = ReadLimits();
};

/// What `load_weights` did.
struct LoadReport {
  std::string format;  ///< "safetensors", "torch-zip" or "torch-legacy"
  std::string layout;  ///< "direct", "timm-convnextv2", "torchvision-vit"
  std::vector<std::string> loaded;   ///< module keys filled from the file
  std::vector<std::string> skipped;  ///< file keys not used (heads, or unmatched when non-strict)
  std::vector<std::string> missing;  ///< module keys left at their initial values
  std::vector<std::string> converted;  ///< file keys converted from fp16/bf16/fp64 to the module's dtype
  std::vector<std::string> resampled;  ///< ViT position embeddings resampled to the model's grid
  /// One-paragraph summary for logs.
  std::string summary() const;
};

/// Reads every tensor of a weights file into a flat name → tensor map (CPU). Accepts
/// .safetensors, `torch.save` zip archives and legacy (pre-1.6) `torch.save` files holding a
/// dict or OrderedDict of tensors, optionally wrapped as {'state_dict': …}, {'model': …},
/// {'model_ema': …} or {'module': …}; strips `module.` prefixes.
///
/// Files are untrusted. The pickle reader runs no code and accepts only the globals a state dict
/// needs (the tensor rebuild functions, OrderedDict and the storage types, as PyTorch's
/// weights_only loader); any other, os.system for one, is refused by name. Before anything is
/// allocated, every storage, tensor extent and offset is checked against the file's real size and
/// `limits` (elements, nesting depth, string length, header size).
/// Throws `std::runtime_error` naming the file and the problem when it is missing, truncated,
/// corrupt, over a limit, not a checkpoint, or holds something other than tensors.
std::map<std::string, torch::Tensor> read_state_dict(const std::string& path, const ReadLimits& limits = {});

/// Same, from the bytes of a file in memory; `source` names it in errors.
std::map<std::string, torch::Tensor> parse_state_dict(const std::string& bytes, const std::string& source,
                                                      const ReadLimits& limits = {});

/// Loads a weights file into `module` (a backbone, a NordF's `backbone`, or any module whose
/// parameter names follow the file's layout). timm ConvNeXt-V2 keys are mapped onto the official
/// layout, torchvision ViT keys onto timm's; a ViT `pos_embed` for another grid is resampled to
/// the module's (bicubic, as timm), and one that is not 1 + a square number of tokens is a
/// `std::invalid_argument` naming the key and the shapes. Tensors are converted to the module's dtype and device. Throws `std::runtime_error`
/// naming the first offending key: a shape mismatch, an integer tensor for a floating-point
/// parameter, NaN or infinity, two file keys for one module key always; a missing or unexpected
/// key in strict mode. Nothing is copied unless the whole load succeeds.
LoadReport load_weights(torch::nn::Module& module, const std::string& path, const LoadWeightsOptions& options = {});

/// Same, from an in-memory state dict (`source` names it in messages).
LoadReport load_state_dict(torch::nn::Module& module, std::map<std::string, torch::Tensor> state,
                           const std::string& source, const LoadWeightsOptions& options = {});

}  // namespace nordf
