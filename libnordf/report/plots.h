#pragma once
/// @file
/// Plots of runs and evaluations, rendered by PLplot (cairo) to PNG or SVG.

#include <libnordf/ood/evaluator.h>
#include <libnordf/train/trainer.h>

#include <string>
#include <vector>

namespace nordf::report {

/// One curve (line plot) or one sample (histogram).
struct Series {
  std::string label;
  std::vector<double> x, y;  ///< histograms use `y` only
};

/// Axis labels, title and size of a plot.
struct PlotOptions {
  std::string title, xlabel, ylabel;
  int width = 960, height = 640;
  /// Fixed y range; when ymin ≥ ymax the range follows the data.
  double ymin = 0, ymax = 0;
  int bins = 40;  ///< histograms
};

/// Line plot of several series with a legend. The format follows the extension: ".png"
/// (pngcairo) or ".svg" (svgcairo). Written atomically. Throws `std::invalid_argument` on an
/// unknown extension or empty/non-finite data, `std::runtime_error` naming the path on I/O failure.
void line_plot(const std::string& path, const std::vector<Series>& series, const PlotOptions& options);

/// Overlaid histograms (normalised to densities) of each series' `y` values, shared bins.
void histogram_plot(const std::string& path, const std::vector<Series>& series, const PlotOptions& options);

/// Writes DIR/loss.{png,svg} (train and val total loss and each component per epoch) and
/// DIR/accuracy.{png,svg} (classification and similarity-branch accuracy, GRL weight).
/// Returns the files written.
std::vector<std::string> plot_history(const std::vector<EpochRecord>& history, const std::string& dir);

/// Writes, for each OOD set, DIR/roc-<set>.{png,svg} (ROC curves of `methods`, OOD positive) and
/// DIR/scores-<method>.{png,svg} (score densities of ID test and every OOD set) per method.
/// Returns the files written. Throws `std::invalid_argument` naming a method the report lacks.
std::vector<std::string> plot_ood(const ood::Report& report, const std::vector<std::string>& methods,
                                  const std::string& dir);

}  // namespace nordf::report
