// nordf-plot: the nordf-basic run, then every plot: training curves, ROC curves and score
// distributions (PNG and SVG under OUT/plots/), and the saliency stage (8 images by default).
#include "../common/pipeline.h"

#include <fmt/core.h>

int main(int argc, char** argv) {
  return nordf::app::main_guard(
      argc, argv,
      {"nordf-plot",
       "nordf-plot: train (or --resume/--eval-only) NORD-F like nordf-basic, then plot training curves,\n"
       "ROC curves and score distributions to OUT/plots/, and saliency maps of both branches to OUT/saliency/.",
       "plot", nlohmann::json{{"saliency", {{"images", 8}}}}, [](const nordf::app::RunResult& run) {
         const std::string dir = run.out + "/plots";
         std::vector<std::string> files;
         if (!run.history.empty()) files = nordf::report::plot_history(run.history, dir);
         // The classification baselines and NORD-F's own scores that the evaluation ran.
         std::vector<std::string> methods;
         for (const char* m : {"msp", "energy", "mahalanobis", "knn", "vim", "nordf_sim", "nordf_recon", "nordf_fused"})
           if (run.report.scores.count(m)) methods.push_back(m);
         if (methods.empty())
           for (const auto& kv : run.report.scores) methods.push_back(kv.first);
         auto ood = nordf::report::plot_ood(run.report, methods, dir);
         files.insert(files.end(), ood.begin(), ood.end());
         fmt::print("plots: {} files in {}\n", files.size(), dir);
       }});
}
