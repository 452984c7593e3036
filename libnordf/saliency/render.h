#pragma once
/// @file
/// Saliency rendering: colormaps, overlays on the un-normalised image, montage grids.

#include <torch/torch.h>

#include <string>
#include <vector>

namespace nordf::saliency {

enum class Colormap { kViridis, kJet };
/// Parses "viridis" or "jet". Throws `std::invalid_argument` listing them.
Colormap parse_colormap(const std::string& name);

/// Maps an H×W (or 1×H×W) saliency map to a 3×H×W colour image in [0, 1]: |map| scaled by its
/// maximum (an all-zero map gives the colormap's lowest colour).
torch::Tensor colorize(const torch::Tensor& map, Colormap colormap = Colormap::kViridis);

/// (1 − α)·image + α·colorize(map): image 3×H×W in [0, 1] (un-normalised), map H×W at the same
/// size. Throws c10::Error on mismatched sizes or α outside [0, 1].
torch::Tensor overlay(const torch::Tensor& image, const torch::Tensor& map, double alpha = 0.5,
                      Colormap colormap = Colormap::kViridis);

/// Lays out 3×H×W cells (all the same size) as a grid of rows × columns with `pad` white pixels
/// between cells. Throws `std::invalid_argument` on an empty grid, ragged rows or mixed sizes.
torch::Tensor montage(const std::vector<std::vector<torch::Tensor>>& cells, int64_t pad = 2);

}  // namespace nordf::saliency
