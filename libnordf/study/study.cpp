#include <libnordf/core/io.h>
#include <libnordf/core/json.h>
#include <libnordf/core/registry.h>
#include <libnordf/study/study.h>

#include <unistd.h>

#include <fmt/core.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <sstream>

namespace nordf::study {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

json parse_object(const std::string& text, const std::string& where) {
  json j;
  try {
    j = parse_json(text);
  } catch (const JsonSyntaxError& e) {
    throw std::invalid_argument(where + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw std::invalid_argument(where + ": expected a JSON object");
  return j;
}

/// Deep merge of two partial configurations (objects merge, other values are replaced).
void deep_merge(json& into, const json& patch) {
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (into.contains(it.key()) && into[it.key()].is_object() && it.value().is_object())
      deep_merge(into[it.key()], it.value());
    else
      into[it.key()] = it.value();
  }
}

void check_name(const std::string& name, const std::string& what, const std::string& where) {
  const bool ok = !name.empty() && name.size() <= 64 && name != "." && name != ".." &&
                  std::all_of(name.begin(), name.end(), [](unsigned char c) {
                    return std::isalnum(c) || c == '-' || c == '_' || c == '.';
                  });
  if (!ok)
    throw std::invalid_argument(where + ": " + what + " name '" + name +
                                "' must be 1-64 letters, digits, '.', '_' or '-', and not '.' or '..'");
}

json spec_to_json(const Spec& s) {
  json j{{"name", s.name}, {"description", s.description}, {"base", json::parse(s.base)}, {"seeds", s.seeds},
         {"reference", s.reference}};
  j["points"] = json::array();
  for (const auto& p : s.points) j["points"].push_back({{"name", p.name}, {"config", json::parse(p.config)}});
  j["splits"] = json::array();
  for (const auto& p : s.splits) j["splits"].push_back({{"name", p.name}, {"config", json::parse(p.config)}});
  return j;
}

std::vector<Variant> variants_from_json(const json& arr, const std::string& what, const std::string& where) {
  if (!arr.is_array()) throw std::invalid_argument(where + ": '" + what + "' must be an array");
  std::vector<Variant> out;
  for (const auto& v : arr) {
    if (!v.is_object() || !v.contains("name") || !v.at("name").is_string())
      throw std::invalid_argument(where + ": every entry of '" + what + "' needs a \"name\" string");
    for (auto it = v.begin(); it != v.end(); ++it)
      if (it.key() != "name" && it.key() != "config")
        throw std::invalid_argument(where + ": " + what + " '" + v.at("name").get<std::string>() + "': unknown field '" +
                                    it.key() + "' (a point has \"name\" and \"config\")");
    const json config = v.contains("config") ? v.at("config") : json::object();
    if (!config.is_object())
      throw std::invalid_argument(where + ": " + what + " '" + v.at("name").get<std::string>() + "': \"config\" must be an object");
    out.push_back({v.at("name").get<std::string>(), config.dump()});
  }
  return out;
}

Spec spec_from_json(const json& j, const std::string& where) {
  if (!j.is_object()) throw std::invalid_argument(where + ": expected a JSON object");
  static const std::set<std::string> kFields = {"name", "description", "base", "points", "splits", "seeds", "reference"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kFields.count(it.key()))
      throw std::invalid_argument(where + ": unknown field '" + it.key() +
                                  "'; known: base, description, name, points, reference, seeds, splits");
  for (const char* required : {"points", "seeds"})
    if (!j.contains(required)) throw std::invalid_argument(where + ": the grid has no \"" + std::string(required) + "\"");
  if (!j.at("seeds").is_array())
    throw std::invalid_argument(where + ": seeds: expected an array of non-negative integers, got " +
                                std::string(j.at("seeds").type_name()));
  for (const char* field : {"name", "description", "reference"})
    if (j.contains(field) && !j.at(field).is_string())
      throw std::invalid_argument(where + ": " + field + ": expected a string, got " + j.at(field).type_name());
  if (j.contains("base") && !j.at("base").is_object())
    throw std::invalid_argument(where + ": base: expected an object, got " + std::string(j.at("base").type_name()));
  Spec s;
  try {
    s.name = j.value("name", fs::path(where).stem().string());
    s.description = j.value("description", "");
    s.reference = j.value("reference", "");
    s.base = j.value("base", json::object()).dump();
    s.points = variants_from_json(j.at("points"), "points", where);
    s.splits = variants_from_json(j.value("splits", json::array()), "splits", where);
    for (const auto& v : j.at("seeds")) {
      if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
        throw std::invalid_argument(where + ": seeds must be non-negative integers, got " + v.dump());
      s.seeds.push_back(v.get<uint64_t>());
    }
  } catch (const json::exception& e) {
    throw std::invalid_argument(where + ": " + e.what());
  }
  return s;
}

/// The configuration of every run of one (split, point) before the seed: defaults, base, split,
/// point, each merged with the location of its keys in errors.
std::string variant_config(const Spec& spec, const std::string& split, const std::string& point, const std::string& where) {
  auto c = experiment::merge_config(experiment::default_config(), spec.base, where + ": base");
  for (const auto& s : spec.splits)
    if (s.name == split) c = experiment::merge_config(c, s.config, where + ": split '" + split + "'");
  for (const auto& p : spec.points)
    if (p.name == point) c = experiment::merge_config(c, p.config, where + ": point '" + point + "'");
  return c;
}

std::vector<std::string> split_names(const Spec& spec) {
  std::vector<std::string> out;
  for (const auto& s : spec.splits) out.push_back(s.name);
  if (out.empty()) out.push_back("default");
  return out;
}

}  // namespace

// ---- built-in studies ------------------------------------------------------------------------

std::vector<std::string> builtin_names() { return {"full", "quick"}; }

Spec builtin(const std::string& name) {
  // Points shared by both studies. The reference ("ce-only") is the same backbone trained with
  // cross-entropy alone, under the same budget: the network OpenOOD scores its baselines on.
  const std::vector<Variant> required = {
      {"nordf", "{}"},
      {"ce-only", R"({"model": {"no_similarity": true, "no_reconstruction": true},
                      "train": {"lambda_sim": 0, "lambda_rec": 0}})"},
      {"no-similarity", R"({"model": {"no_similarity": true}, "train": {"lambda_sim": 0}})"},
      {"recon-only", R"({"model": {"no_similarity": true}, "train": {"lambda_sim": 0, "lambda_cls": 0},
                         "ood": {"methods": ["nordf_recon"]}})"},
      {"recon-mse", R"({"train": {"recon_loss": "mse"}})"},
      {"recon-huber", R"({"train": {"recon_loss": "huber"}})"}};
  const std::vector<Variant> splits = {{"fmnist-0-4", R"({"data": {"id_classes": [0, 1, 2, 3, 4]}})"},
                                       {"fmnist-even", R"({"data": {"id_classes": [0, 2, 4, 6, 8]}})"}};
  Spec s;
  s.name = name;
  s.reference = "ce-only";
  if (name == "quick") {
    s.description =
        "nordf-plot's default: the four required points (NORD-F, cross-entropy only, no similarity branch, "
        "reconstruction only) and L1 vs MSE vs Huber reconstruction, on two Fashion-MNIST ID/OOD splits, 2 seeds, "
        "at a reduced per-run budget (300 training images per class, 2 epochs, ODIN left out).";
    s.base = R"({"data": {"train_per_class": 300, "val_per_class": 60, "test_per_class": 200, "ood_limit": 1000},
                 "train": {"epochs": 2},
                 "ood": {"methods": ["msp", "maxlogit", "energy", "gen", "mahalanobis", "knn", "react", "vim",
                                     "nordf_recon", "nordf_sim", "nordf_fused"], "embedding_points": 200},
                 "saliency": {"images": 4, "methods": ["gradcam"], "randomisation": false}})";
    s.points = required;
    s.splits = splits;
    s.seeds = {14, 15};
    return s;
  }
  if (name == "full") {
    s.description =
        "Every question of the seed note: the required points; reconstruction loss L1 vs MSE vs Huber vs perceptual, "
        "and L1 vs MSE between perceptual features; cosine vs Euclidean similarity; "
        "backbone ConvNeXt V2 vs VGG16 vs ViT-Tiny; batch norm vs group norm at batch 2 and at the default batch; GRL weight 0 "
        "vs the default vs a larger value with a ramp; on two Fashion-MNIST splits with 3 seeds and the default "
        "per-run budget.";
    s.base = R"({"saliency": {"images": 4, "methods": ["gradcam", "gradcam++"], "randomisation": false}})";
    s.points = required;
    const std::vector<Variant> more = {
        // The perceptual network is randomly initialised (no weights can be downloaded here); give it a
        // pretrained file with train.perceptual_weights for the loss the literature means.
        {"recon-perceptual", R"({"model": {"recon_size": 32}, "train": {"recon_loss": "perceptual",
                                 "perceptual_network": "vgg16", "perceptual_layers": [3, 8]}})"},
        // The seed note: "L1 is better than MSE for a perceptual loss".
        {"recon-perceptual-mse", R"({"model": {"recon_size": 32}, "train": {"recon_loss": "perceptual",
                                     "perceptual_network": "vgg16", "perceptual_layers": [3, 8],
                                     "perceptual_distance": "mse"}})"},
        {"similarity-euclidean", R"({"model": {"similarity": "euclidean"}})"},
        {"backbone-vgg16", R"({"model": {"backbone": "vgg16"}})"},
        // Transformers from scratch want AdamW with weight decay and a warm-up (DeiT's recipe,
        // scaled to this budget); 32 px gives a 2×2 token grid at patch 16.
        {"backbone-vit-tiny", R"({"model": {"backbone": "vit_tiny_patch16"},
                                  "train": {"optimizer": "adamw", "lr": 0.0005, "weight_decay": 0.05,
                                            "warmup_epochs": 1}})"},
        {"norm-batch", R"({"model": {"norm": "batch"}})"},
        {"norm-batch-b2", R"({"model": {"norm": "batch"}, "train": {"batch_size": 2}})"},
        {"norm-group-b2", R"({"train": {"batch_size": 2}})"},
        {"grl-0", R"({"train": {"grl_weight": 0}})"},
        {"grl-0.1-ramp", R"({"train": {"grl_weight": 0.1, "grl_schedule": "dann"}})"}};
    s.points.insert(s.points.end(), more.begin(), more.end());
    s.splits = splits;
    s.seeds = {14, 15, 16};
    return s;
  }
  throw std::invalid_argument("unknown study '" + name + "'; known: " + join_names(builtin_names()));
}

Spec read_spec(const std::string& path) {
  if (!fs::is_regular_file(path)) throw std::runtime_error("grid file '" + path + "' does not exist");
  json j;
  try {
    j = parse_json(read_file(path));
  } catch (const JsonSyntaxError& e) {
    throw std::invalid_argument("'" + path + "' is not valid JSON: " + e.what());
  }
  auto spec = spec_from_json(j, path);
  validate(spec, path);
  return spec;
}

void validate(const Spec& spec, const std::string& where) {
  check_name(spec.name, "study", where);
  if (spec.points.empty()) throw std::invalid_argument(where + ": the grid has no points");
  if (spec.seeds.empty()) throw std::invalid_argument(where + ": the grid has no seeds");
  std::set<std::string> names;
  for (const auto& p : spec.points) {
    check_name(p.name, "point", where);
    if (!names.insert(p.name).second) throw std::invalid_argument(where + ": point '" + p.name + "' is listed twice");
  }
  std::set<std::string> splits;
  for (const auto& s : spec.splits) {
    check_name(s.name, "split", where);
    if (!splits.insert(s.name).second) throw std::invalid_argument(where + ": split '" + s.name + "' is listed twice");
  }
  if (std::set<uint64_t>(spec.seeds.begin(), spec.seeds.end()).size() != spec.seeds.size())
    throw std::invalid_argument(where + ": a seed is listed twice");
  for (const auto seed : spec.seeds)
    if (seed > static_cast<uint64_t>(INT64_MAX))
      throw std::invalid_argument(where + ": seed " + std::to_string(seed) + " is out of range (run.seed is at most " +
                                  std::to_string(INT64_MAX) + ")");
  if (!spec.reference.empty() && !names.count(spec.reference))
    throw std::invalid_argument(where + ": the reference point '" + spec.reference + "' is not in the grid");
  parse_object(spec.base, where + ": base");
  // Each run's configuration, and then what it asks of its model (which would otherwise fail only
  // when that run starts, after every earlier run): once per distinct model, saliency and
  // reconstruction-loss setting.
  std::set<std::string> models;
  for (const auto& split : split_names(spec))
    for (const auto& p : spec.points) {
      const auto c = variant_config(spec, split, p.name, where);
      const auto what = where + ": point '" + p.name + "'" + (spec.splits.empty() ? "" : " on split '" + split + "'");
      experiment::validate_config(c, what);
      const auto j = json::parse(c);
      json key = {{"model", j.at("model")}, {"saliency", j.at("saliency")}};
      for (const auto& [k, v] : j.at("train").items())
        if (k == "recon_loss" || k.rfind("perceptual_", 0) == 0 || k == "huber_delta") key["train"][k] = v;
      if (!models.insert(key.dump()).second) continue;
      try {
        experiment::check_model_config(c);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(what + ": " + e.what());
      }
    }
}

void override_base(Spec& spec, const std::string& patch, const std::string& where) {
  auto base = parse_object(spec.base, where);
  auto p = parse_object(patch, where);
  // Key check: the patch must merge into the defaults.
  experiment::merge_config(experiment::default_config(), p.dump(), where);
  deep_merge(base, p);
  spec.base = base.dump();
}

std::string RunId::dir() const { return "runs/" + split + "/" + point + "/seed-" + std::to_string(seed); }

std::vector<RunId> runs(const Spec& spec) {
  std::vector<RunId> out;
  for (auto seed : spec.seeds)
    for (const auto& split : split_names(spec))
      for (const auto& p : spec.points) out.push_back({split, p.name, seed});
  return out;
}

std::string run_config(const Spec& spec, const RunId& id, const std::string& study_dir) {
  auto c = json::parse(variant_config(spec, id.split, id.point, spec.name));
  c["run"]["seed"] = id.seed;
  c["run"]["out"] = (fs::path(study_dir) / id.dir()).string();
  return c.dump(2);
}

// ---- running ---------------------------------------------------------------------------------

namespace {

std::string mmss(double s) {
  const auto t = static_cast<int64_t>(std::llround(s));
  return t >= 3600 ? fmt::format("{}:{:02d}:{:02d}", t / 3600, t / 60 % 60, t % 60) : fmt::format("{}:{:02d}", t / 60, t % 60);
}

/// Whether `mine` is the study `theirs` with points added: the same base, splits, seeds and
/// reference, and each of their points unchanged (the description may differ). Finished runs of
/// such a study stay valid, so it resumes the directory.
bool grows(const json& theirs, const json& mine) {
  if (!theirs.is_object() || !theirs.contains("points") || !theirs.at("points").is_array()) return false;
  json a = theirs, b = mine;
  for (auto* j : {&a, &b}) {
    j->erase("points");
    j->erase("description");
  }
  if (a != b) return false;
  for (const auto& p : theirs.at("points")) {
    bool kept = false;
    for (const auto& q : mine.at("points")) kept = kept || p == q;
    if (!kept) return false;
  }
  return true;
}

/// Writes OUT/study.json, or checks that the one there describes the same study, or the same
/// study with points added (then it is rewritten).
void claim_directory(const Spec& spec, const std::string& out) {
  const auto manifest = (fs::path(out) / "study.json").string();
  const auto mine = spec_to_json(spec);
  const auto text = mine.dump(2) + "\n";
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec || !fs::is_directory(out))
    throw std::runtime_error("cannot create the study directory '" + out + "'" + (ec ? ": " + ec.message() : ": a file is in the way"));
  // Shards of one job array start together, possibly on different machines sharing the
  // directory: study.json is created with link(2), which is atomic on local and NFS file systems,
  // so exactly one shard creates it and the others compare with it. Another shard's temporary
  // file, or the runs it already started, are not taken for a foreign directory.
  const auto is_temporary = [](const std::string& name) {
    const auto dots = name.find_first_not_of('.');
    return dots != 0 && dots != std::string::npos && name.compare(dots, 11, "study.json.") == 0;
  };
  for (;;) {
    if (fs::exists(manifest)) {
      json theirs;
      try {
        theirs = parse_json(read_file(manifest));
      } catch (const JsonSyntaxError& e) {
        throw std::runtime_error("'" + manifest + "' is not a study manifest: " + e.what());
      }
      if (theirs == mine) return;
      if (!grows(theirs, mine))
        throw std::invalid_argument("'" + out + "' holds a different study ('" + theirs.value("name", "?") +
                                    "', " + manifest + "): its grid, seeds or base configuration differ; use another "
                                    "output directory, or the same grid and flags to resume it (adding points is allowed)");
      write_file_atomic(manifest, text);
      return;
    }
    bool foreign = false;
    for (const auto& entry : fs::directory_iterator(out))
      foreign = foreign || !is_temporary(entry.path().filename().string());
    if (foreign) {
      if (fs::exists(manifest)) continue;  // another shard claimed it meanwhile
      throw std::invalid_argument("'" + out + "' is not empty and holds no study (no study.json); use another output directory");
    }
    const auto tmp = (fs::path(out) / (".study.json.claim" + std::to_string(std::random_device{}()))).string();
    write_file_atomic(tmp, text);
    const int linked = ::link(tmp.c_str(), manifest.c_str());
    const int err = errno;
    fs::remove(tmp, ec);
    if (linked == 0) return;
    if (err != EEXIST)
      throw std::runtime_error("cannot create '" + manifest + "': " + std::strerror(err));
  }
}

}  // namespace

Summary run(const Spec& spec, const Options& options) {
  validate(spec, spec.name);
  if (options.shards < 1 || options.shard < 1 || options.shard > options.shards)
    throw std::invalid_argument("shard " + std::to_string(options.shard) + "/" + std::to_string(options.shards) +
                                ": expected i/n with 1 ≤ i ≤ n");
  if (options.out_dir.empty()) throw std::invalid_argument("study: the output directory is empty");
  const auto log = options.log ? options.log : [](const std::string&) {};
  claim_directory(spec, options.out_dir);

  const auto all = runs(spec);
  std::vector<size_t> mine;
  for (size_t i = 0; i < all.size(); ++i)
    if (static_cast<int64_t>(i) % options.shards == options.shard - 1) mine.push_back(i);
  log(fmt::format("study {}: {} points × {} split(s) × {} seeds = {} runs{} in {}", spec.name, spec.points.size(),
                  split_names(spec).size(), spec.seeds.size(), all.size(),
                  options.shards > 1 ? fmt::format(" (shard {}/{}: {} runs)", options.shard, options.shards, mine.size()) : "",
                  options.out_dir));

  const auto settled = [&](const experiment::Status& s) {
    return s.state == "finished" || (s.state == "failed" && !options.retry_failed);
  };
  int64_t to_run = 0;  // the ETA counts only the runs this invocation trains
  for (const auto i : mine) to_run += !settled(experiment::read_status((fs::path(options.out_dir) / all[i].dir()).string()));
  const auto t0 = std::chrono::steady_clock::now();
  int64_t done = 0, ran = 0;
  double ran_seconds = 0;
  for (size_t k = 0; k < mine.size(); ++k) {
    const auto& id = all[mine[k]];
    const auto dir = (fs::path(options.out_dir) / id.dir()).string();
    const auto label = fmt::format("[{}/{}] {} · {} · seed {}", k + 1, mine.size(), id.split, id.point, id.seed);
    const auto status = experiment::read_status(dir);
    if (settled(status)) {
      ++done;
      log(fmt::format("{}: {} earlier{}", label, status.state, status.state == "failed" ? ": " + status.error : ""));
      continue;
    }
    const auto config = run_config(spec, id, options.out_dir);
    if (!status.state.empty() && fs::exists(fs::path(dir) / "checkpoints" / "latest.pt"))
      log(fmt::format("{}: resuming the {} run from its checkpoint", label, status.state));
    const auto r0 = std::chrono::steady_clock::now();
    std::string outcome;
    try {
      experiment::Hooks hooks;
      hooks.stop = options.stop;
      // Resumed from its checkpoint when it has one; started (again) when it has none: never
      // run, failed early, or stopped before its first checkpoint.
      auto result = experiment::run(config, experiment::Mode::kAuto, hooks);
      if (result.interrupted) {
        log(fmt::format("{}: {}; run the same command again to resume", label,
                        result.paused ? "paused after train.max_steps steps" : "interrupted"));
        break;
      }
      double best = kNaN;
      std::string best_method;
      for (const auto& m : result.report.methods)
        if (m.has_near && !(m.near_mean.auroc <= best)) best = m.near_mean.auroc, best_method = m.method;
      const bool classifier = json::parse(config).at("train").at("lambda_cls").get<double>() > 0;
      outcome = fmt::format("finished, ID acc {}, best near-OOD AUROC {:.2f} % ({})",
                            classifier ? fmt::format("{:.2f} %", 100 * result.report.id_accuracy) : "— (no classifier loss)",
                            100 * best, best_method);
    } catch (const std::exception& e) {
      std::string what = e.what();
      if (auto nl = what.find('\n'); nl != std::string::npos) what = what.substr(0, nl);
      outcome = "FAILED: " + what;
      if (options.stop && options.stop->load()) {
        log(fmt::format("{}: {}", label, outcome));
        break;
      }
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count();
    ++done;
    ++ran;
    ran_seconds += secs;
    const double eta = ran_seconds / static_cast<double>(ran) * static_cast<double>(std::max<int64_t>(0, to_run - ran));
    log(fmt::format("{}: {} in {} · study ETA {}", label, outcome, mmss(secs), mmss(eta)));
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log(fmt::format("study {}: {} of {} runs of this shard done in {}", spec.name, done, mine.size(), mmss(total)));
  auto summary = summarize(options.out_dir);
  write_outputs(summary, options.out_dir);
  return summary;
}

// ---- summarising -----------------------------------------------------------------------------

namespace {

Stat stat_of(const std::vector<double>& v) {
  Stat s;
  std::vector<double> x;
  for (double d : v)
    if (std::isfinite(d)) x.push_back(d);
  s.n = static_cast<int64_t>(x.size());
  if (x.empty()) {
    s.mean = s.sd = kNaN;
    return s;
  }
  for (double d : x) s.mean += d / static_cast<double>(x.size());
  double ss = 0;
  for (double d : x) ss += (d - s.mean) * (d - s.mean);
  s.sd = x.size() > 1 ? std::sqrt(ss / static_cast<double>(x.size() - 1)) : kNaN;
  return s;
}

double metric_of(const json& m, const char* set, const char* key) {
  return m.contains(set) ? m.at(set).at(key).get<double>() : kNaN;
}

std::vector<StepRecord> read_steps(const std::string& path) {
  std::vector<StepRecord> out;
  std::ifstream in(path);
  if (!in) return out;
  std::string line;
  std::getline(in, line);  // header
  int64_t number = 1;
  while (std::getline(in, line)) {
    ++number;
    std::istringstream ls(line);
    std::string f;
    std::vector<std::string> v;
    while (std::getline(ls, f, ',')) v.push_back(f);
    const auto bad = [&] { return std::runtime_error("'" + path + "' line " + std::to_string(number) + ": malformed: '" + line + "'"); };
    if (v.size() < 11) throw bad();
    const auto integer = [&](const std::string& t) {
      size_t used = 0;
      int64_t x = 0;
      try {
        x = std::stoll(t, &used);
      } catch (const std::exception&) {
        throw bad();
      }
      if (used != t.size()) throw bad();
      return x;
    };
    const auto number_of = [&](const std::string& t) {
      char* end = nullptr;
      const double x = std::strtod(t.c_str(), &end);  // "nan", "inf" and out-of-range values as they read
      if (t.empty() || end != t.c_str() + t.size()) throw bad();
      return x;
    };
    StepRecord r;
    r.epoch = integer(v[0]);
    r.step = integer(v[1]);
    r.loss = number_of(v[2]);
    r.sim = number_of(v[3]);
    r.cls = number_of(v[4]);
    r.rec = number_of(v[5]);
    r.grad_norm = number_of(v[6]);
    r.clipped = v[7] == "1";
    r.finite = v[8] == "1";
    r.grl_weight = number_of(v[9]);
    r.lr = number_of(v[10]);
    out.push_back(r);
  }
  return out;
}

RunRecord read_record(const RunId& id, const std::string& study_dir) {
  RunRecord r;
  r.id = id;
  const auto dir = fs::path(study_dir) / id.dir();
  const auto status = experiment::read_status(dir.string());
  r.status = status.state.empty() ? "missing" : status.state;
  r.error = status.error;
  r.seconds = status.seconds;
  if (r.status != "finished") return r;
  // Each file of a finished run, read and used under its own name in errors.
  const auto read = [&](const char* file, const auto& use) {
    const auto path = (dir / file).string();
    try {
      use(parse_json(read_file(path)));
    } catch (const JsonSyntaxError& e) {
      throw std::runtime_error("'" + path + "' (a finished run) is not valid JSON: " + e.what());
    } catch (const json::exception& e) {
      throw std::runtime_error("'" + path + "' (a finished run) is corrupt: " + e.what());
    }
  };
  read("config.json", [&](const json& config) {
    r.classifier_trained = config.at("train").at("lambda_cls").get<double>() > 0;
  });
  read("ood/metrics.json", [&](const json& metrics) {
    r.id_accuracy = metrics.at("id_accuracy").get<double>();
    for (auto it = metrics.at("methods").begin(); it != metrics.at("methods").end(); ++it)
      r.scores[it.key()] = {metric_of(it.value(), "near_mean", "auroc"), metric_of(it.value(), "near_mean", "fpr95"),
                            metric_of(it.value(), "far_mean", "auroc"), metric_of(it.value(), "far_mean", "fpr95")};
  });
  read("history.json", [&](const json& history) {
    if (!history.is_array()) throw std::runtime_error("'" + (dir / "history.json").string() + "' (a finished run) is corrupt: expected an array of epochs");
    for (const auto& e : history) {
      const auto& val = e.at("val");
      r.val_loss.push_back(val.at("loss").is_null() ? kNaN : val.at("loss").get<double>());
      r.val_accuracy.push_back(val.at("cls_accuracy").is_null() ? kNaN : val.at("cls_accuracy").get<double>());
    }
  });
  if (!r.val_loss.empty()) r.final_val_loss = r.val_loss.back();
  r.stability = stability(read_steps((dir / "steps.csv").string()));
  return r;
}

bool is_nordf_score(const std::string& method) { return method.rfind("nordf_", 0) == 0; }

/// The score with the best mean near-OOD AUROC among `candidates` present in every run.
ScoreStats best_score(const std::vector<const RunRecord*>& runs, bool nordf) {
  ScoreStats best;
  if (runs.empty()) return best;
  for (const auto& kv : runs.front()->scores) {
    if (is_nordf_score(kv.first) != nordf) continue;
    std::vector<double> na, nf, fa, ff;
    bool everywhere = true;
    for (const auto* r : runs) {
      auto it = r->scores.find(kv.first);
      if (it == r->scores.end()) {
        everywhere = false;
        break;
      }
      na.push_back(it->second.near_auroc);
      nf.push_back(it->second.near_fpr95);
      fa.push_back(it->second.far_auroc);
      ff.push_back(it->second.far_fpr95);
    }
    if (!everywhere) continue;
    const auto s = stat_of(na);
    if (best.method.empty() || s.mean > best.near_auroc.mean) {
      best.method = kv.first;
      best.near_auroc = s;
      best.near_fpr95 = stat_of(nf);
      best.far_auroc = stat_of(fa);
      best.far_fpr95 = stat_of(ff);
    }
  }
  return best;
}

std::string pct(const Stat& s) {
  if (s.n == 0 || !std::isfinite(s.mean)) return "—";
  return s.n > 1 ? fmt::format("{:.2f} ± {:.2f}", 100 * s.mean, 100 * s.sd) : fmt::format("{:.2f}", 100 * s.mean);
}
std::string num(const Stat& s, int digits = 2) {
  if (s.n == 0 || !std::isfinite(s.mean)) return "—";
  return s.n > 1 ? fmt::format("{:.{}f} ± {:.{}f}", s.mean, digits, s.sd, digits) : fmt::format("{:.{}f}", s.mean, digits);
}
std::string signed_pct(const Stat& s) {
  if (s.n == 0 || !std::isfinite(s.mean)) return "—";
  return s.n > 1 ? fmt::format("{:+.2f} ± {:.2f}", 100 * s.mean, 100 * s.sd) : fmt::format("{:+.2f}", 100 * s.mean);
}

json stat_json(const Stat& s) {
  auto v = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
  return {{"mean", v(s.mean)}, {"sd", v(s.sd)}, {"n", s.n}};
}

json score_json(const ScoreStats& s) {
  if (s.method.empty()) return nullptr;
  return {{"method", s.method},
          {"near_auroc", stat_json(s.near_auroc)},
          {"near_fpr95", stat_json(s.near_fpr95)},
          {"far_auroc", stat_json(s.far_auroc)},
          {"far_fpr95", stat_json(s.far_fpr95)}};
}

}  // namespace

int64_t Summary::finished() const {
  int64_t n = 0;
  for (const auto& r : records) n += r.status == "finished";
  return n;
}

Summary summarize(const std::string& out_dir) {
  const auto manifest = (fs::path(out_dir) / "study.json").string();
  if (!fs::exists(manifest)) throw std::runtime_error("'" + out_dir + "' holds no study (" + manifest + " is missing)");
  Summary sum;
  try {
    sum.spec = spec_from_json(parse_json(read_file(manifest)), manifest);
  } catch (const JsonSyntaxError& e) {
    throw std::runtime_error("'" + manifest + "' is not a study manifest: " + e.what());
  }
  for (const auto& id : runs(sum.spec)) sum.records.push_back(read_record(id, out_dir));

  for (const auto& split : split_names(sum.spec)) {
    std::map<std::string, std::vector<const RunRecord*>> finished_by_point;
    for (const auto& p : sum.spec.points) {
      Row row;
      row.split = split;
      row.point = p.name;
      std::vector<const RunRecord*> ok;
      for (const auto& r : sum.records) {
        if (r.id.split != split || r.id.point != p.name) continue;
        if (r.status == "finished") ok.push_back(&r);
        else if (r.status == "failed") ++row.failed;
        else ++row.missing;
      }
      row.finished = static_cast<int64_t>(ok.size());
      std::vector<double> acc, spikes, nonfinite, clipped, loss, secs;
      for (const auto* r : ok) {
        if (r->classifier_trained) acc.push_back(r->id_accuracy);
        // A run without recorded steps has no stability figures (not 0 spikes).
        spikes.push_back(r->stability.steps ? static_cast<double>(r->stability.loss_spikes) : kNaN);
        nonfinite.push_back(r->stability.steps ? static_cast<double>(r->stability.nonfinite_steps) : kNaN);
        clipped.push_back(r->stability.steps ? static_cast<double>(r->stability.clipped_steps) / r->stability.steps : kNaN);
        loss.push_back(r->final_val_loss);
        secs.push_back(r->seconds);
      }
      row.id_accuracy = stat_of(acc);
      row.loss_spikes = stat_of(spikes);
      row.nonfinite_steps = stat_of(nonfinite);
      row.clipped_share = stat_of(clipped);
      row.final_val_loss = stat_of(loss);
      row.seconds = stat_of(secs);
      row.best_nordf = best_score(ok, true);
      row.best_baseline = best_score(ok, false);
      finished_by_point[p.name] = ok;
      sum.rows.push_back(row);
    }
    const auto& ref = sum.spec.reference;
    if (ref.empty()) continue;
    const Row* ref_row = nullptr;
    for (const auto& row : sum.rows)
      if (row.split == split && row.point == ref) ref_row = &row;
    // A row's best score overall: NORD-F's or a baseline, whichever has the higher mean near AUROC.
    auto best_of = [](const Row& r) -> const ScoreStats& {
      return r.best_nordf.method.empty() || (!r.best_baseline.method.empty() &&
                                             r.best_baseline.near_auroc.mean > r.best_nordf.near_auroc.mean)
                 ? r.best_baseline
                 : r.best_nordf;
    };
    if (!ref_row || best_of(*ref_row).method.empty()) continue;
    const ScoreStats& theirs = best_of(*ref_row);
    for (const auto& row : sum.rows) {
      if (row.split != split || row.point == ref) continue;
      const ScoreStats& mine = best_of(row);
      if (mine.method.empty()) continue;
      Comparison c;
      c.split = split;
      c.point = row.point;
      c.method = mine.method;
      c.reference_method = theirs.method;
      std::vector<double> dn, df, da;
      for (const auto* r : finished_by_point[row.point])
        for (const auto* q : finished_by_point[ref])
          if (q->id.seed == r->id.seed) {
            const auto& a = r->scores.at(c.method);
            const auto& b = q->scores.at(c.reference_method);
            dn.push_back(a.near_auroc - b.near_auroc);
            df.push_back(a.far_auroc - b.far_auroc);
            if (r->classifier_trained && q->classifier_trained) da.push_back(r->id_accuracy - q->id_accuracy);
          }
      c.near_auroc = stat_of(dn);
      c.far_auroc = stat_of(df);
      c.id_accuracy = stat_of(da);
      // The noise a difference must exceed: the larger seed sd of either point, or of the paired
      // differences themselves (NaN when none is defined: fewer than 2 seeds).
      auto largest = [](std::initializer_list<double> sds) {
        double m = kNaN;
        for (double v : sds)
          if (std::isfinite(v) && !(v <= m)) m = v;
        return m;
      };
      c.near_spread = largest({mine.near_auroc.sd, theirs.near_auroc.sd, c.near_auroc.sd});
      c.far_spread = largest({mine.far_auroc.sd, theirs.far_auroc.sd, c.far_auroc.sd});
      c.accuracy_spread = largest({row.id_accuracy.sd, ref_row->id_accuracy.sd, c.id_accuracy.sd});
      auto beyond = [](const Stat& d, double spread) {
        return d.n >= 2 && std::isfinite(d.mean) && std::isfinite(spread) && std::abs(d.mean) > spread;
      };
      c.near_beyond_noise = beyond(c.near_auroc, c.near_spread);
      c.far_beyond_noise = beyond(c.far_auroc, c.far_spread);
      c.accuracy_beyond_noise = beyond(c.id_accuracy, c.accuracy_spread);
      sum.comparisons.push_back(c);
    }
  }
  return sum;
}

std::string Summary::markdown() const {
  std::ostringstream o;
  const int64_t total = static_cast<int64_t>(records.size());
  o << "# Study " << spec.name << "\n\n";
  if (!spec.description.empty()) o << spec.description << "\n\n";
  o << fmt::format("{} of {} runs finished; seeds {}; values are mean ± sd over seeds, in % unless noted. ", finished(),
                   total, fmt::format("{}", fmt::join(spec.seeds, ", ")));
  o << "\"Best\" scores are chosen per point by mean near-OOD AUROC (a selection on the test sets, as tables of "
       "this kind usually make); NORD-F's scores are nordf_*, the rest are post-hoc baselines. Stability: loss "
       "spikes are steps whose loss exceeds 3× the median of the previous 50; non-finite steps were never applied.\n\n";
  o << "Base configuration (over the defaults): `" << json::parse(spec.base).dump() << "`\n\n";
  for (const auto& split : split_names(spec)) {
    o << "## Split " << split << "\n\n";
    for (const auto& s : spec.splits)
      if (s.name == split) o << "Overrides: `" << json::parse(s.config).dump() << "`\n\n";
    o << "| point | runs | ID acc | best NORD-F score | near AUROC | near FPR95 | far AUROC | far FPR95 | best baseline "
         "| near AUROC | near FPR95 | far AUROC | far FPR95 | loss spikes | non-finite | clipped % | final val loss | "
         "wall s |\n";
    o << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& r : rows) {
      if (r.split != split) continue;
      auto score_cols = [&](const ScoreStats& s) {
        if (s.method.empty()) return std::string("— | — | — | — | —");
        return fmt::format("{} | {} | {} | {} | {}", s.method, pct(s.near_auroc), pct(s.near_fpr95), pct(s.far_auroc),
                           pct(s.far_fpr95));
      };
      o << fmt::format("| {} | {}{}{} | {} | {} | {} | {} | {} | {} | {} | {} |\n", r.point, r.finished,
                       r.failed ? fmt::format(" ({} failed)", r.failed) : "",
                       r.missing ? fmt::format(" ({} missing)", r.missing) : "", pct(r.id_accuracy),
                       score_cols(r.best_nordf), score_cols(r.best_baseline), num(r.loss_spikes, 1),
                       num(r.nonfinite_steps, 1), r.clipped_share.n ? pct(r.clipped_share) : "—", num(r.final_val_loss, 4),
                       num(r.seconds, 0));
    }
    bool any = false;
    for (const auto& c : comparisons) {
      if (c.split != split) continue;
      if (!any) {
        o << "\n### Paired by seed against " << spec.reference << "\n\n"
          << "Δ = the point's best score − " << spec.reference
          << "'s best score (a baseline when the reference is the cross-entropy-only network), per seed "
             "(percentage points). A difference is beyond noise when |mean Δ| exceeds "
             "the spread: the largest of the two points' seed sds and the sd of the paired differences, with at "
             "least 2 seeds. With so few seeds this is a screen, not a significance test.\n\n"
          << "| point | score vs reference | Δ near AUROC | spread | | Δ far AUROC | spread | | Δ ID acc | spread | |\n"
          << "|---|---|---|---|---|---|---|---|---|---|---|\n";
        any = true;
      }
      auto verdict = [](const Stat& d, bool beyond) {
        return d.n < 2 ? "too few seeds" : beyond ? "beyond noise" : "within noise";
      };
      auto spread = [](double v) { return std::isfinite(v) ? fmt::format("{:.2f}", 100 * v) : std::string("—"); };
      o << fmt::format("| {} | {} vs {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", c.point, c.method,
                       c.reference_method, signed_pct(c.near_auroc), spread(c.near_spread),
                       verdict(c.near_auroc, c.near_beyond_noise), signed_pct(c.far_auroc), spread(c.far_spread),
                       verdict(c.far_auroc, c.far_beyond_noise), signed_pct(c.id_accuracy), spread(c.accuracy_spread),
                       c.id_accuracy.n ? verdict(c.id_accuracy, c.accuracy_beyond_noise) : "—");
    }
    o << "\n";
  }
  bool failed = false;
  for (const auto& r : records) {
    if (r.status != "failed") continue;
    if (!failed) o << "## Failed runs\n\n";
    failed = true;
    o << "- " << r.id.dir() << ": " << r.error << "\n";
  }
  return o.str();
}

std::string Summary::json() const {
  nlohmann::json j;
  j["study"] = spec_to_json(spec);
  j["runs"] = nlohmann::json::array();
  for (const auto& r : records) {
    nlohmann::json rj{{"split", r.id.split}, {"point", r.id.point}, {"seed", r.id.seed}, {"dir", r.id.dir()},
                      {"status", r.status}, {"seconds", r.seconds}};
    if (!r.error.empty()) rj["error"] = r.error;
    if (r.status == "finished") {
      rj["id_accuracy"] = r.classifier_trained ? nlohmann::json(r.id_accuracy) : nlohmann::json(nullptr);
      auto v = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); };
      for (const auto& [m, s] : r.scores)
        rj["scores"][m] = {{"near_auroc", v(s.near_auroc)}, {"near_fpr95", v(s.near_fpr95)},
                           {"far_auroc", v(s.far_auroc)}, {"far_fpr95", v(s.far_fpr95)}};
      rj["stability"] = {{"steps", r.stability.steps},
                         {"loss_spikes", r.stability.loss_spikes},
                         {"nonfinite_steps", r.stability.nonfinite_steps},
                         {"clipped_steps", r.stability.clipped_steps},
                         {"max_grad_norm", r.stability.max_grad_norm},
                         {"median_grad_norm", r.stability.median_grad_norm}};
      rj["final_val_loss"] = v(r.final_val_loss);
    }
    j["runs"].push_back(rj);
  }
  j["rows"] = nlohmann::json::array();
  for (const auto& r : rows)
    j["rows"].push_back({{"split", r.split},
                         {"point", r.point},
                         {"finished", r.finished},
                         {"failed", r.failed},
                         {"missing", r.missing},
                         {"id_accuracy", stat_json(r.id_accuracy)},
                         {"best_nordf", score_json(r.best_nordf)},
                         {"best_baseline", score_json(r.best_baseline)},
                         {"loss_spikes", stat_json(r.loss_spikes)},
                         {"nonfinite_steps", stat_json(r.nonfinite_steps)},
                         {"clipped_share", stat_json(r.clipped_share)},
                         {"final_val_loss", stat_json(r.final_val_loss)},
                         {"seconds", stat_json(r.seconds)}});
  j["comparisons"] = nlohmann::json::array();
  for (const auto& c : comparisons)
    j["comparisons"].push_back({{"split", c.split},
                                {"point", c.point},
                                {"method", c.method},
                                {"reference_method", c.reference_method},
                                {"near_auroc", stat_json(c.near_auroc)},
                                {"far_auroc", stat_json(c.far_auroc)},
                                {"id_accuracy", stat_json(c.id_accuracy)},
                                {"near_beyond_noise", c.near_beyond_noise},
                                {"far_beyond_noise", c.far_beyond_noise},
                                {"accuracy_beyond_noise", c.accuracy_beyond_noise}});
  return j.dump(2) + "\n";
}

}  // namespace nordf::study
