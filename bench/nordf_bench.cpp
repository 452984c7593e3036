// nordf-bench: what the NORD-F training step, the evaluation, the data pipeline and the machine's
// sgemm cost, measured on this machine. Prints what it measured and on what; the `result` lines
// are for bench/compare.py, which runs this and the Python reference side by side.
#include "../apps/common/run_config.h"

#include <fmt/core.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux reports KiB
}

// libnordf's apps run OpenBLAS single-threaded (experiment::configure_threads); the benchmark
// lets every split be measured.
void set_blas_threads(int64_t n) {
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    set(static_cast<int>(n));
}

int64_t count_parameters(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

// ---- the training step on random data ----------------------------------------------------
void measure_step(const json& config, const std::string& text, torch::Device device, int64_t steps, int64_t warmup,
                  bool breakdown, const std::string& profile, bool channels_last) {
  const auto log = [](const std::string& s) { fmt::print(stderr, "{}\n", s); };
  auto model = nordf::experiment::make_model(text, 5, log);
  model->to(device);
  model->train();
  auto recon = nordf::experiment::make_recon_loss(text, log);
  recon->to(device);
  const auto t = nordf::experiment::make_train_options(text);
  // Channels-last: every 4-D weight (convolutions) and the inputs in NHWC, as PyTorch's
  // `model.to(memory_format=torch.channels_last)`; the kernels then pick their NHWC paths.
  const auto format = channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
  if (channels_last) {
    torch::NoGradGuard no_grad;
    for (auto* m : {static_cast<torch::nn::Module*>(model.get()), static_cast<torch::nn::Module*>(recon.get())})
      for (auto& p : m->parameters())
        if (p.dim() == 4) p.set_data(p.contiguous(format));
  }
  nordf::NordFLoss loss(t.loss_weights, recon, t.sim_eps);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(t.lr));

  const int64_t n = config["train"]["batch_size"], s = model->options.image_size(), r = model->recon_size();
  auto x1 = torch::randn({n, 3, s, s}, device).contiguous(format);
  auto x2 = torch::randn({n, 3, s, s}, device).contiguous(format);
  nordf::PairTargets targets{torch::randint(0, 5, {n}, torch::dtype(torch::kLong).device(device)),
                             torch::randint(0, 5, {n}, torch::dtype(torch::kLong).device(device)),
                             torch::randint(0, 2, {n}, device).to(torch::kFloat), torch::rand({n, 3, r, r}, device).contiguous(format),
                             torch::rand({n, 3, r, r}, device).contiguous(format)};
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
  // Each step timed on its own; the median is robust to a noisy neighbour.
  std::vector<double> times;
  for (int64_t i = 0; i < steps; ++i) {
    const auto t0 = Clock::now();
    step();
    sync();
    times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  const double step_s = times[times.size() / 2];

  fmt::print("train step{}: {:.1f} ms median of {} steps after {} warm-up ({:.1f} pairs/s); {} parameters\n",
             channels_last ? " (channels-last)" : "", step_s * 1e3, steps, warmup, static_cast<double>(n) / step_s,
             count_parameters(*model));
  fmt::print("result step_ms {:.2f}\nresult params {}\n", step_s * 1e3, count_parameters(*model));
  if (!profile.empty()) {
    {
      torch::autograd::profiler::RecordProfile guard(profile);  // LibTorch's operator-level trace
      step();
    }
    fmt::print("profile of one step (Chrome trace): {} (bench/profile_summary.py FILE)\n", profile);
  }
  if (!breakdown) return;

  // Where the time goes: backbone alone (forward + backward) on the 2N batch, and the decoder.
  auto both = torch::cat({x1, x2});
  auto t0 = Clock::now();
  for (int64_t i = 0; i < steps; ++i) model->backbone->forward(both).sum().backward();
  sync();
  const double backbone_s = seconds_since(t0) / static_cast<double>(steps);
  double decoder_s = 0;
  if (model->has_reconstruction()) {
    auto z = torch::randn({2 * n, model->decoder->options.in_channels(), model->feature_size(), model->feature_size()},
                          device);
    t0 = Clock::now();
    for (int64_t i = 0; i < steps; ++i) model->decoder->forward(z).sum().backward();
    sync();
    decoder_s = seconds_since(t0) / static_cast<double>(steps);
  }
  fmt::print("  backbone fwd+bwd on 2N images: {:.1f} ms | decoder fwd+bwd: {:.1f} ms\n", backbone_s * 1e3,
             decoder_s * 1e3);
}

// ---- the evaluation on random images -----------------------------------------------------
// A synthetic open set (random uint8 images, 5 classes) of `per_set` images in each of ID
// train, ID validation, ID test and one near-OOD set, through `ood::evaluate` with every
// registered score: features, logits, reconstructions, fitting and scoring, and the metrics.
void measure_eval(const std::string& text, torch::Device device, int64_t per_set, int64_t repeats,
                  const std::string& profile) {
  const auto log = [](const std::string& s) { fmt::print(stderr, "{}\n", s); };
  auto model = nordf::experiment::make_model(text, 5, log);
  model->to(device);
  const int64_t s = model->options.image_size();
  auto make_set = [&](const std::string& name, int64_t seed) {
    torch::manual_seed(seed);
    auto images = torch::randint(0, 256, {per_set, 3, s, s}, torch::kUInt8);
    std::vector<int64_t> labels(static_cast<size_t>(per_set));
    for (int64_t i = 0; i < per_set; ++i) labels[static_cast<size_t>(i)] = i % 5;
    return std::make_shared<nordf::TensorImageDataset>(name, images, labels);
  };
  nordf::OpenSetSplit split;
  split.name = "random";
  split.class_names = {"0", "1", "2", "3", "4"};
  split.train = make_set("train", 1);
  split.val = make_set("val", 2);
  split.test = make_set("test", 3);
  split.ood.push_back({"near", true, make_set("near", 4)});
  auto options = nordf::experiment::make_eval_options(text);
  options.device = device;
  // ood.methods (--ood-methods): empty = every registered score
  options.out_dir.clear();
  options.embedding_points = 0;
  nordf::ood::evaluate(model, split, options);  // warm-up
  std::vector<double> times;
  size_t methods = 0;
  for (int64_t i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    const auto report = nordf::ood::evaluate(model, split, options);
    times.push_back(seconds_since(t0));
    methods = report.methods.size();
  }
  std::sort(times.begin(), times.end());
  const double t = times[times.size() / 2];
  const double images = 4.0 * static_cast<double>(per_set);
  fmt::print("evaluation: {} scores on {} images (ID train, val, test and near-OOD, {} each), batch {}: {:.2f} s median "
             "of {}, {:.1f} images/s\n",
             methods, images, per_set, options.loader.batch_size, t, repeats, images / t);
  fmt::print("result eval_images_per_s {:.2f}\n", images / t);
  if (!profile.empty()) {
    {
      torch::autograd::profiler::RecordProfile guard(profile);
      nordf::ood::evaluate(model, split, options);
    }
    fmt::print("profile of one evaluation (Chrome trace): {} (bench/profile_summary.py FILE)\n", profile);
  }
}

// ---- the data pipeline on an image folder ------------------------------------------------
// ROOT/<class>/<image>: the training pair loader (decode, augment, reconstruction target,
// normalise, batch) over one epoch, after one warm-up epoch that fills the page cache.
void measure_data(const std::string& text, const std::string& root, int64_t epochs) {
  std::vector<std::string> classes;
  auto data = nordf::read_image_folder(root, &classes);
  if (classes.size() < 2)
    throw std::runtime_error("--data-dir '" + root + "' needs at least two class folders of images");
  auto options = nordf::experiment::make_loader_options(text, /*train=*/true);
  options.drop_last = true;
  nordf::PairLoader loader(data, 0.5, options);
  auto pass = [&](int64_t epoch) {
    int64_t images = 0;
    auto e = loader.epoch(epoch);
    while (auto b = e.next()) images += 2 * b->x1.size(0);
    return images;
  };
  pass(0);
  std::vector<double> rates;
  for (int64_t e = 1; e <= epochs; ++e) {
    const auto t0 = Clock::now();
    const auto n = pass(e);
    rates.push_back(static_cast<double>(n) / seconds_since(t0));
  }
  std::sort(rates.begin(), rates.end());
  const double rate = rates[rates.size() / 2];
  fmt::print("data pipeline: {} files in {} classes, pairs of {} px + {} px targets, batch {}, {} workers, crop {} flip {} "
             "rotation {}: {:.1f} images/s (median of {} epochs)\n",
             data->size(), classes.size(), options.transform.image_size, options.transform.recon_size,
             options.batch_size, options.workers, options.transform.crop_scale_min, options.transform.hflip_prob,
             options.transform.rotation_degrees, rate, epochs);
  fmt::print("result data_images_per_s {:.2f}\n", rate);
}

// ---- sgemm ---------------------------------------------------------------------------------
void measure_sgemm(int64_t n, int64_t repeats) {
  auto a = torch::randn({n, n}), b = torch::randn({n, n});
  auto c = torch::mm(a, b);
  double best = 1e30;
  for (int64_t i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    torch::mm_out(c, a, b);
    best = std::min(best, seconds_since(t0));
  }
  const double gflops = 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / best / 1e9;
  fmt::print("sgemm {}x{}: {:.1f} GFLOP/s (best of {})\n", n, n, gflops, repeats);
  fmt::print("result sgemm_gflops {:.2f}\n", gflops);
}

// ---- the depthwise weight gradient ---------------------------------------------------------
// oneDNN's (LibTorch's convolution_backward) against libnordf's direct kernel, at the depthwise
// convolutions of the configured ConvNeXt's four stages for one training step (both images of
// each pair), alternating, best of `repeats`.
void measure_depthwise(const json& config, int64_t repeats) {
  const auto name = config["model"]["backbone"].get<std::string>();
  nordf::ConvNeXtConfig cn;
  if (name.rfind("convnextv2_", 0) == 0)
    cn = nordf::convnextv2_config(name.substr(11));
  else if (name.rfind("convnext_", 0) == 0)
    cn = nordf::convnext_config(name.substr(9));
  else
    throw std::invalid_argument("--measure depthwise needs a ConvNeXt backbone, got " + name);
  const int64_t n = 2 * config["train"]["batch_size"].get<int64_t>(), side = config["model"]["image_size"].get<int64_t>();
  if (side % 32 != 0)
    throw std::invalid_argument("--measure depthwise: model.image_size must be a multiple of 32 (a ConvNeXt's "
                                "reduction), got " + std::to_string(side));
  double total_onednn = 0, total_direct = 0;
  for (const bool channels_last : {true, false}) {
    double sum_onednn = 0, sum_direct = 0;
    for (size_t s = 0; s < 4; ++s) {
      const int64_t c = cn.dims[s], hw = std::max<int64_t>(1, side / (4 << s));
      auto x = torch::randn({n, c, hw, hw}), g = torch::randn({n, c, hw, hw});
      if (channels_last) {
        x = x.contiguous(torch::MemoryFormat::ChannelsLast);
        g = g.contiguous(torch::MemoryFormat::ChannelsLast);
      }
      const auto w = torch::randn({c, 1, 7, 7});
      double onednn = 1e30, direct = 1e30;
      for (int64_t r = 0; r <= repeats; ++r) {  // the first round warms up
        auto t0 = Clock::now();
        auto a = at::convolution_backward(g, x, w, c10::IntArrayRef{c}, {1, 1}, {3, 3}, {1, 1}, false, {0, 0}, c,
                                          {false, true, true});
        const double t_onednn = seconds_since(t0);
        t0 = Clock::now();
        auto b = nordf::depthwise7x7_weight_grad(x, g);
        const double t_direct = seconds_since(t0);
        if (r > 0) {
          onednn = std::min(onednn, t_onednn);
          direct = std::min(direct, t_direct);
        }
      }
      fmt::print("depthwise weight gradient, {} x {} x {} x {} {}: oneDNN {:.2f} ms, direct {:.2f} ms ({:.1f}x), "
                 "x {} blocks\n",
                 n, c, hw, hw, channels_last ? "channels-last" : "contiguous", onednn * 1e3, direct * 1e3,
                 onednn / direct, cn.depths[s]);
      sum_onednn += onednn * static_cast<double>(cn.depths[s]);
      sum_direct += direct * static_cast<double>(cn.depths[s]);
    }
    fmt::print("all {} blocks, {}: oneDNN {:.1f} ms, direct {:.1f} ms per step ({:.1f}x)\n",
               cn.depths[0] + cn.depths[1] + cn.depths[2] + cn.depths[3], channels_last ? "channels-last" : "contiguous",
               sum_onednn * 1e3, sum_direct * 1e3, sum_onednn / sum_direct);
    if (channels_last) total_onednn = sum_onednn, total_direct = sum_direct;
  }
  fmt::print("result depthwise_onednn_ms {:.3f}\nresult depthwise_direct_ms {:.3f}\n", total_onednn * 1e3,
             total_direct * 1e3);
}

int run(int argc, char** argv) {
  CLI::App app{"nordf-bench: time the NORD-F training step, evaluation, data pipeline and sgemm on this machine"};
  nordf::app::ConfigFlags flags(app);
  nordf::app::add_version_flag(app);
  std::string measure = "step", data_dir;
  int64_t steps = 20, warmup = 3, blas_threads = 1, eval_images = 256, repeats = 3, sgemm_size = 2048, data_epochs = 2;
  bool breakdown = false, channels_last = false;
  std::string profile;
  double crop_scale_min = -1, rotation = -1;
  app.add_option("--measure", measure, "step, eval, data, sgemm or depthwise")
      ->check(CLI::IsMember({"step", "eval", "data", "sgemm", "depthwise"}));
  // Counts. CLI11 would clamp a value beyond 64 bits to the limit: the range check comes first.
  auto count = [&](const std::string& name, int64_t& value, const std::string& help, int64_t min,
                   int64_t max = INT64_MAX) {
    app.add_option(name, value, help)->check(nordf::app::int64_range())->check(CLI::Range(min, max));
  };
  count("--steps", steps, "timed steps (step)", 1);
  count("--warmup", warmup, "untimed steps first (step)", 0);
  app.add_flag("--breakdown", breakdown, "also time the backbone and the decoder alone (step)");
  app.add_flag("--channels-last", channels_last, "convolution weights and inputs in channels-last memory format (step)");
  app.add_option("--profile", profile, "write LibTorch's operator trace of one more step or evaluation to this file (step, eval)");
  count("--blas-threads", blas_threads, "OpenBLAS threads (the apps use 1; at most 4096, as run.threads)", 1, 4096);
  count("--eval-images", eval_images, "images in each of the four evaluation sets (eval)", 1);
  count("--repeats", repeats, "timed repetitions (eval, sgemm, depthwise)", 1);
  app.add_option("--data-dir", data_dir, "an image folder, ROOT/<class>/<image> (data)");
  count("--data-epochs", data_epochs, "timed epochs after a warm-up epoch (data)", 1);
  app.add_option("--crop-scale-min", crop_scale_min, "data.crop_scale_min: random-resized-crop lower area bound (data)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--rotation", rotation, "data.rotation: maximum rotation in degrees (data)")->check(CLI::Range(0.0, 180.0));
  count("--sgemm-size", sgemm_size, "matrix size (sgemm)", 1);
  nordf::app::refuse_options_as_values(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (measure == "data" && data_dir.empty()) throw std::invalid_argument("--measure data needs --data-dir");
  json config = json::parse(nordf::experiment::default_config());
  flags.apply(config);
  if (crop_scale_min >= 0) config["data"]["crop_scale_min"] = crop_scale_min;
  if (rotation >= 0) config["data"]["rotation"] = rotation;
  const auto text = config.dump();
  nordf::experiment::validate_config(text, "configuration");
  nordf::experiment::configure_threads(config["run"]["threads"].get<int64_t>());
  set_blas_threads(blas_threads);
  const bool cpu_cache = nordf::configure_cpu_cache();
  const auto device = nordf::experiment::make_device(config["run"]["device"]);
  fmt::print("nordf-bench {}: libnordf {}, LibTorch {}, {} cores, device {}, {} LibTorch threads, {} OpenBLAS threads, "
             "CPU cache {}\n",
             measure, NORDF_VERSION_STRING, TORCH_VERSION, std::thread::hardware_concurrency(), device.str(),
             torch::get_num_threads(), blas_threads,
             cpu_cache ? fmt::format("{} MiB", nordf::cpu_cache_stats().max_cached_bytes >> 20) : std::string("off"));
  if (measure == "step" || measure == "eval")
    fmt::print("model: {} backbone, {} px, batch {}, branch width {}, {} norm, recon {} px, {} loss{}\n",
               config["model"]["backbone"].get<std::string>(), config["model"]["image_size"].get<int64_t>(),
               config["train"]["batch_size"].get<int64_t>(), config["model"]["channels"].get<int64_t>(),
               config["model"]["norm"].get<std::string>(), config["model"]["recon_size"].get<int64_t>(),
               config["train"]["recon_loss"].get<std::string>(),
               config["train"]["direct_depthwise_grad"].get<bool>() ? ", direct depthwise weight gradients" : "");
  if (measure == "step") measure_step(config, text, device, steps, warmup, breakdown, profile, channels_last);
  if (measure == "eval") measure_eval(text, device, eval_images, repeats, profile);
  if (measure == "data") measure_data(text, data_dir, data_epochs);
  if (measure == "sgemm") measure_sgemm(sgemm_size, repeats);
  if (measure == "depthwise") measure_depthwise(config, repeats);
  if (cpu_cache) {
    const auto s = nordf::cpu_cache_stats();
    fmt::print("CPU cache: {} hits, {} misses, {} blocks released, peak {:.1f} MiB in use + cached, peak {:.1f} MiB in use\n",
               s.hits, s.misses, s.released, static_cast<double>(s.peak_bytes) / (1 << 20),
               static_cast<double>(s.peak_in_use_bytes) / (1 << 20));
  }
  fmt::print("peak RSS: {:.1f} MiB\nresult peak_rss_mib {:.1f}\n", peak_rss_mib(), peak_rss_mib());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return nordf::app::guarded("nordf-bench", [&] { return run(argc, argv); });
}
