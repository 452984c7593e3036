// nordf-bench: measures the NORD-F training step (forward, loss, backward, Adam step) on random
// data, and where the time goes. Prints what it measured and on what.
#include "../common/run_config.h"

#include <fmt/core.h>

#include <chrono>
#include <thread>

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run(int argc, char** argv) {
  using nlohmann::json;
  CLI::App app{"nordf-bench: time the NORD-F training step on random data"};
  nordf::app::ConfigFlags flags(app);
  nordf::app::add_version_flag(app);
  int64_t steps = 20, warmup = 3;
  app.add_option("--steps", steps, "timed steps");
  app.add_option("--warmup", warmup, "untimed steps first");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  json config = json::parse(nordf::experiment::default_config());
  flags.apply(config);
  const auto text = config.dump();
  nordf::experiment::validate_config(text, "configuration");
  nordf::experiment::configure_threads(config["run"]["threads"].get<int64_t>());
  const auto device = nordf::experiment::make_device(config["run"]["device"]);
  const auto log = [](const std::string& s) { fmt::print(stderr, "{}\n", s); };
  auto model = nordf::experiment::make_model(text, 5, log);
  model->to(device);
  model->train();
  auto recon = nordf::experiment::make_recon_loss(text, log);
  recon->to(device);
  const auto t = nordf::experiment::make_train_options(text);
  nordf::NordFLoss loss(t.loss_weights, recon, t.sim_eps);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(t.lr));

  const int64_t n = config["train"]["batch_size"], s = model->options.image_size(), r = model->recon_size();
  auto x1 = torch::randn({n, 3, s, s}, device), x2 = torch::randn({n, 3, s, s}, device);
  nordf::PairTargets targets{torch::randint(0, 5, {n}, torch::dtype(torch::kLong).device(device)),
                             torch::randint(0, 5, {n}, torch::dtype(torch::kLong).device(device)),
                             torch::randint(0, 2, {n}, device).to(torch::kFloat), torch::rand({n, 3, r, r}, device),
                             torch::rand({n, 3, r, r}, device)};
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  auto step = [&] {
    auto out = model->forward(x1, x2, 0.5);
    auto terms = loss(out, targets);
    opt.zero_grad();
    terms.total.backward();
    if (t.grad_clip_norm > 0) torch::nn::utils::clip_grad_norm_(model->parameters(), t.grad_clip_norm);  // as the Trainer
    opt.step();
  };
  for (int64_t i = 0; i < warmup; ++i) step();
  sync();
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) step();
  sync();
  const double step_s = seconds_since(t0) / static_cast<double>(steps);

  // Where the time goes: backbone alone (forward + backward) on the 2N batch.
  auto both = torch::cat({x1, x2});
  t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) model->backbone->forward(both).sum().backward();
  sync();
  const double backbone_s = seconds_since(t0) / static_cast<double>(steps);
  double decoder_s = 0;
  if (model->has_reconstruction()) {
    auto z = torch::randn({2 * n, model->decoder->options.in_channels(), model->feature_size(), model->feature_size()},
                          device);
    t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < steps; ++i) model->decoder->forward(z).sum().backward();
    sync();
    decoder_s = seconds_since(t0) / static_cast<double>(steps);
  }

  // OOD metrics on a million scores (sort-based, O(n log n)).
  std::vector<double> id(500000), ood(500000);
  {
    auto a = torch::randn({500000}, torch::kDouble) + 1.0, b = torch::randn({500000}, torch::kDouble);
    std::copy(a.data_ptr<double>(), a.data_ptr<double>() + a.numel(), id.begin());
    std::copy(b.data_ptr<double>(), b.data_ptr<double>() + b.numel(), ood.begin());
  }
  t0 = std::chrono::steady_clock::now();
  auto metrics = nordf::ood::compute_metrics(id, ood, "bench");
  const double metrics_s = seconds_since(t0);

  fmt::print("nordf-bench: {} backbone, {} px, {} pairs/batch, branch width {}, recon {} px, {} loss, device {}, {} threads\n",
             config["model"]["backbone"].get<std::string>(), s, n, model->options.channels(), r,
             config["train"]["recon_loss"].get<std::string>(), device.str(), torch::get_num_threads());
  fmt::print("train step: {:.1f} ms ({:.1f} pairs/s) over {} steps after {} warm-up\n", step_s * 1e3,
             static_cast<double>(n) / step_s, steps, warmup);
  fmt::print("  backbone fwd+bwd on 2N images: {:.1f} ms | decoder fwd+bwd: {:.1f} ms\n", backbone_s * 1e3, decoder_s * 1e3);
  fmt::print("OOD metrics on 1,000,000 scores (500k ID, 500k OOD, Gaussian, AUROC {:.4f}): {:.3f} s\n", metrics.auroc,
             metrics_s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return nordf::app::guarded("nordf-bench", [&] { return run(argc, argv); });
}
