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
  /// Optional band around the curve (line plots; same length as x), drawn shaded in the curve's colour.
  std::vector<double> lo, hi;
};

/// One marker series of a category plot: a value and an error half-width per category.
struct CategorySeries {
  std::string label;
  std::vector<double> mean, err;  ///< NaN means = no marker for that category
};

/// A group of points of one colour in a scatter panel.
struct ScatterGroup {
  std::string label;
  std::vector<double> x, y;
  int colour = -1;  ///< palette index (0 = the first colour, 6 = grey); −1 = the group's position
};

/// One panel of a scatter figure.
struct ScatterPanel {
  std::string title, xlabel, ylabel;
  std::vector<ScatterGroup> groups;
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

/// Markers with error bars (mean ± err) for named categories along x, one colour per series, the
/// series side by side within a category; category names are written below the axis, slanted.
/// Throws `std::invalid_argument` when a series' length differs from the categories'.
void category_plot(const std::string& path, const std::vector<std::string>& categories,
                   const std::vector<CategorySeries>& series, const PlotOptions& options);

/// Scatter panels in a grid of `columns` columns, each with its own axes, title and legend.
/// `options` sets the figure's size; its title heads the figure.
void scatter_plot(const std::string& path, const std::vector<ScatterPanel>& panels, int columns,
                  const PlotOptions& options);

/// A grid of RGB images (3×H×W in [0, 1], any sizes; each resized to `cell` px square, nearest)
/// with a label left of every row and above every column, and an optional title line, written as
/// a PNG (atomically). Throws `std::invalid_argument` on empty or ragged input or mismatched label
/// counts.
void labelled_montage(const std::string& path, const std::vector<std::vector<torch::Tensor>>& cells,
                      const std::vector<std::string>& row_labels, const std::vector<std::string>& column_labels,
                      int64_t cell = 96, const std::string& title = "");

/// Writes DIR/loss.{png,svg} (train and val total loss and each component per epoch) and
/// DIR/accuracy.{png,svg} (classification and similarity-branch accuracy, GRL weight).
/// Returns the files written.
std::vector<std::string> plot_history(const std::vector<EpochRecord>& history, const std::string& dir);

/// Writes, for each OOD set, DIR/roc-<set>.{png,svg} (ROC curves of `methods`, OOD positive) and
/// DIR/scores-<method>.png (score densities of ID test and every OOD set) per method.
/// Returns the files written. Throws `std::invalid_argument` naming a method the report lacks.
std::vector<std::string> plot_ood(const ood::Report& report, const std::vector<std::string>& methods,
                                  const std::string& dir);

}  // namespace nordf::report
