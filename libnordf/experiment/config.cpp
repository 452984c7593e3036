#include <libnordf/core/json.h>
#include <libnordf/core/registry.h>
#include <libnordf/data/sources.h>
#include <libnordf/experiment/config.h>
#include <libnordf/saliency/saliency.h>
#include <libnordf/weights/weights.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <optional>
#include <set>
#include <stdexcept>

namespace nordf::experiment {

using nlohmann::json;

namespace {

json defaults() {
  return json{
      {"data",
       {{"dataset", "fashion-mnist"},
        {"root", ""},
        {"ood_root", ""},
        {"far_ood_root", ""},
        {"id_classes", json::array()},
        {"train_per_class", 800},
        {"val_per_class", 200},
        {"test_per_class", 500},
        {"ood_limit", 2500},
        {"fractions", {0.8, 0.1, 0.1}},
        {"same_class_rate", 0.5},
        {"skip_corrupt", false},
        {"workers", 2},
        {"hflip", 0.5},
        {"rotation", 0.0},
        {"crop_scale_min", 1.0}}},
      {"model",
       {{"backbone", "convnextv2_atto"},
        {"backbone_weights", ""},
        {"image_size", 32},
        {"recon_size", 16},
        {"channels", 256},
        {"norm", "group"},
        {"similarity", "cosine"},
        {"no_similarity", false},
        {"no_reconstruction", false},
        {"drop_path", 0.0},
        {"dropout", 0.2},
        {"decoder_width", 64},
        {"decoder_blocks", 1}}},
      {"train",
       {{"batch_size", 32},
        {"epochs", 3},
        {"lr", 1e-3},
        {"warmup_epochs", 0.0},
        {"weight_decay", 0.0},
        {"optimizer", "adam"},
        {"lr_schedule", "cosine"},
        {"lambda_sim", 1.0},
        {"lambda_cls", 1.0},
        {"lambda_rec", 1.0},
        {"sim_eps", 1e-3},
        {"grad_clip", 5.0},
        {"direct_depthwise_grad", false},
        {"max_nonfinite_steps", 0},
        {"max_steps", 0},
        {"recon_loss", "l1"},
        {"huber_delta", 0.1},
        {"perceptual_network", "vgg16"},
        {"perceptual_layers", {3, 8, 15, 22}},
        {"perceptual_layer_weights", json::array()},
        {"perceptual_weights", ""},
        {"perceptual_distance", "l1"},
        {"grl_schedule", "dann"},
        {"grl_weight", 0.01},
        {"checkpoint_every", 1}}},
      {"ood",
       {{"methods", json::array()},
        {"batch_size", 256},
        {"embedding_points", 300},
        {"temperature", 1.0},
        {"odin_temperature", 1000.0},
        {"odin_epsilon", 0.0014},
        {"knn_k", 50},
        {"react_percentile", 90.0},
        {"vim_dim", 0},
        {"gen_gamma", 0.1},
        {"gen_top", 100}}},
      {"saliency",
       {{"images", 0},
        {"methods", json::array()},
        {"colormap", "viridis"},
        {"baseline", "zero"},
        {"cam_layer", "auto"},
        {"foreground_threshold", "auto"},
        {"randomisation", true}}},
      {"run", {{"seed", 14}, {"threads", 0}, {"device", "cpu"}, {"out", ""}, {"dist_timeout", 300}}}};
}

/// Settings that take either a word or a number ("auto" or a layer index, ...).
bool word_or_number(const std::string& path) {
  return path == "saliency.cam_layer" || path == "saliency.foreground_threshold";
}

std::string type_name(const json& v) {
  if (v.is_boolean()) return "true or false";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

bool same_kind(const json& def, const json& v, const std::string& path) {
  if (word_or_number(path)) return v.is_string() || v.is_number();
  if (def.is_number_float()) return v.is_number();
  if (def.is_number()) return v.is_number_integer() || v.is_number_unsigned();
  return def.type() == v.type();
}

/// A number given as a JSON number or as a string that spells one in full ("0.25", "3").
std::optional<double> as_number(const json& v) {
  if (v.is_number()) return v.get<double>();
  if (!v.is_string()) return std::nullopt;
  const auto text = v.get<std::string>();
  try {
    size_t used = 0;
    const double x = std::stod(text, &used);
    if (used == text.size()) return x;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

std::string shown(const json& v) {
  auto s = v.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

/// The default of a setting, by dotted path (null when the defaults have no such key). A
/// setting's declared type is its default's: an earlier layer that wrote 0 for a number must not
/// make a later layer's 0.5 "not an integer".
json declared(const std::string& path) {
  static const json d = defaults();
  const json* at = &d;
  size_t start = 0;
  while (true) {
    const auto dot = path.find('.', start);
    const auto key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!at->is_object() || !at->contains(key)) return nullptr;
    at = &(*at)[key];
    if (dot == std::string::npos) return *at;
    start = dot + 1;
  }
}

void merge(json& config, const json& patch, const std::string& where, const std::string& prefix) {
  if (!patch.is_object())
    throw std::invalid_argument(where + ": " + (prefix.empty() ? std::string("the configuration") : prefix) +
                                ": expected an object, got " + shown(patch));
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    const std::string path = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (!config.contains(it.key())) throw std::invalid_argument(where + ": unknown setting '" + path + "'");
    auto& slot = config[it.key()];
    if (slot.is_object()) {
      merge(slot, it.value(), where, path);
    } else {
      const json declared_value = declared(path);
      const json& kind = declared_value.is_null() ? slot : declared_value;
      if (!same_kind(kind, it.value(), path))
        throw std::invalid_argument(where + ": " + path + ": expected " + type_name(kind) + ", got " + shown(it.value()));
      slot = it.value();
    }
  }
}

json parse(const std::string& text, const std::string& where) {
  try {
    return parse_json(text);
  } catch (const JsonSyntaxError& e) {
    throw std::invalid_argument(where + ": not valid JSON: " + e.what());
  }
}

// ---- validation ------------------------------------------------------------------------------

class Checker {
 public:
  Checker(const json& c, std::string where) : c_(c), where_(std::move(where)) {}

  [[noreturn]] void fail(const std::string& path, const std::string& why) const {
    throw std::invalid_argument(where_ + ": " + path + ": " + why);
  }
  const json& at(const std::string& path) const {
    const auto dot = path.find('.');
    const auto section = path.substr(0, dot), key = path.substr(dot + 1);
    if (!c_.contains(section) || !c_[section].is_object() || !c_[section].contains(key)) fail(path, "missing");
    return c_[section][key];
  }
  double number(const std::string& path, double lo, double hi, bool lo_open = false, bool hi_open = false) const {
    const auto& v = at(path);
    if (!v.is_number()) fail(path, "expected a number, got " + shown(v));
    const double x = v.get<double>();
    if (!std::isfinite(x) || (lo_open ? x <= lo : x < lo) || (hi_open ? x >= hi : x > hi))
      fail(path, "expected a value in " + std::string(lo_open ? "(" : "[") + fmt(lo) + ", " + fmt(hi) +
                     (hi_open ? ")" : "]") + ", got " + shown(v));
    return x;
  }
  int64_t integer(const std::string& path, int64_t lo, int64_t hi = INT64_MAX) const {
    const auto& v = at(path);
    if (!v.is_number_integer() && !v.is_number_unsigned()) fail(path, "expected an integer, got " + shown(v));
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      fail(path, "expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + shown(v));
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi)
      fail(path, "expected an integer " + (hi == INT64_MAX ? "≥ " + std::to_string(lo)
                                                            : "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]") +
                     ", got " + shown(v));
    return x;
  }
  std::string word(const std::string& path, const std::vector<std::string>& allowed = {}) const {
    const auto& v = at(path);
    if (!v.is_string()) fail(path, "expected a string, got " + shown(v));
    const auto s = v.get<std::string>();
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), s) == allowed.end())
      fail(path, "'" + s + "' is not one of " + join_names(allowed));
    return s;
  }
  bool flag(const std::string& path) const {
    const auto& v = at(path);
    if (!v.is_boolean()) fail(path, "expected true or false, got " + shown(v));
    return v.get<bool>();
  }
  std::vector<std::string> words(const std::string& path, const std::vector<std::string>& allowed) const {
    const auto& v = at(path);
    if (!v.is_array()) fail(path, "expected an array of strings, got " + shown(v));
    std::vector<std::string> out;
    for (const auto& e : v) {
      if (!e.is_string()) fail(path, "expected an array of strings, got " + shown(v));
      const auto s = e.get<std::string>();
      if (std::find(allowed.begin(), allowed.end(), s) == allowed.end())
        fail(path, "'" + s + "' is not one of " + join_names(allowed));
      if (std::find(out.begin(), out.end(), s) != out.end()) fail(path, "'" + s + "' is listed twice");
      out.push_back(s);
    }
    return out;
  }
  void numbers(const std::string& path, bool integers) const {
    const auto& v = at(path);
    const std::string what = integers ? "an array of integers" : "an array of numbers";
    if (!v.is_array()) fail(path, "expected " + what + ", got " + shown(v));
    for (const auto& e : v)
      if (integers ? !(e.is_number_integer() || e.is_number_unsigned()) : !e.is_number())
        fail(path, "expected " + what + ", got " + shown(v));
  }

 private:
  static std::string fmt(double x) {
    std::string s = std::to_string(x);
    s.erase(s.find_last_not_of('0') + 1);
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
  }
  const json& c_;
  std::string where_;
};

void validate(const json& c, const std::string& where) {
  Checker k(c, where);
  if (!c.is_object()) throw std::invalid_argument(where + ": expected a JSON object");
  for (auto it = c.begin(); it != c.end(); ++it)
    if (!defaults().contains(it.key())) throw std::invalid_argument(where + ": unknown section '" + it.key() + "'");
  // data
  k.word("data.dataset", {"fashion-mnist", "image-folder", "stanford-dogs"});
  for (const char* p : {"data.root", "data.ood_root", "data.far_ood_root"}) k.word(p);
  {
    const auto& ids = k.at("data.id_classes");
    if (!ids.is_array()) k.fail("data.id_classes", "expected an array of class indices or names, got " + shown(ids));
    std::set<std::string> seen;
    for (const auto& e : ids) {
      if (!e.is_string() && !e.is_number_integer() && !e.is_number_unsigned())
        k.fail("data.id_classes", "expected class indices or names, got " + shown(e));
      if ((e.is_number_unsigned() && e.get<uint64_t>() > uint64_t(INT64_MAX)) ||
          (e.is_number_integer() && !e.is_number_unsigned() && e.get<int64_t>() < 0))
        k.fail("data.id_classes", "class index " + e.dump() + " is out of range");
      const auto s = e.is_string() ? e.get<std::string>() : std::to_string(e.get<int64_t>());
      if (!seen.insert(s).second) k.fail("data.id_classes", "class " + s + " is listed twice");
    }
    if (ids.size() == 1) k.fail("data.id_classes", "needs at least 2 classes");
  }
  if (!k.at("data.ood_root").get<std::string>().empty() && k.at("data.dataset") != "image-folder")
    k.fail("data.ood_root", "only the image-folder layout takes a near-OOD folder (data.dataset is " +
                                k.at("data.dataset").get<std::string>() + ")");
  for (const char* p : {"data.train_per_class", "data.val_per_class", "data.test_per_class", "data.ood_limit"})
    k.integer(p, 0);
  k.numbers("data.fractions", false);
  {
    const auto& f = k.at("data.fractions");
    double sum = 0;
    for (const auto& e : f) {
      if (e.get<double>() <= 0) k.fail("data.fractions", "every fraction must be positive, got " + shown(f));
      sum += e.get<double>();
    }
    if (f.size() != 3 || std::abs(sum - 1) > 1e-6)
      k.fail("data.fractions", "expected 3 fractions (train, val, test) summing to 1, got " + shown(f));
  }
  k.number("data.same_class_rate", 0, 1);
  k.flag("data.skip_corrupt");
  k.integer("data.workers", 1, 256);
  k.number("data.hflip", 0, 1);
  k.number("data.rotation", 0, 180);
  k.number("data.crop_scale_min", 0, 1, true);
  // model
  k.word("model.backbone", backbone_names());
  k.word("model.backbone_weights");
  k.integer("model.image_size", 1);
  k.integer("model.recon_size", 0);
  k.integer("model.channels", 1);
  k.word("model.norm", {"batch", "group", "layer", "none"});
  k.word("model.similarity", {"cosine", "euclidean"});
  k.flag("model.no_similarity");
  k.flag("model.no_reconstruction");
  k.number("model.drop_path", 0, 1, false, true);
  k.number("model.dropout", 0, 1, false, true);
  k.integer("model.decoder_width", 1);
  k.integer("model.decoder_blocks", 0, 64);
  // train
  k.integer("train.batch_size", 1);
  const int64_t epochs = k.integer("train.epochs", 1);
  k.number("train.lr", 0, 10, true);
  k.number("train.warmup_epochs", 0, static_cast<double>(epochs), false, true);
  k.number("train.weight_decay", 0, 10);
  k.word("train.optimizer", {"adam", "adamw"});
  k.flag("train.direct_depthwise_grad");
  k.word("train.lr_schedule", {"constant", "cosine"});
  const double ls = k.number("train.lambda_sim", 0, 1e6), lc = k.number("train.lambda_cls", 0, 1e6),
               lr = k.number("train.lambda_rec", 0, 1e6);
  // A weight whose branch is absent (model.no_similarity, model.no_reconstruction) is ignored.
  const double active = (k.flag("model.no_similarity") ? 0 : ls) + lc + (k.flag("model.no_reconstruction") ? 0 : lr);
  if (active <= 0) k.fail("train.lambda_cls", "no loss term is left to train: every present branch has weight 0");
  k.number("train.sim_eps", 0, 0.5, false, true);
  k.number("train.grad_clip", 0, 1e12);
  k.integer("train.max_nonfinite_steps", 0);
  k.integer("train.max_steps", 0);
  k.word("train.recon_loss", recon_loss_names());
  k.number("train.huber_delta", 0, 1e6, true);
  k.word("train.perceptual_network", backbone_names());
  k.numbers("train.perceptual_layers", true);
  k.numbers("train.perceptual_layer_weights", false);
  k.word("train.perceptual_weights");
  k.word("train.perceptual_distance", {"huber", "l1", "mse"});
  k.word("train.grl_schedule", {"constant", "linear", "dann", "step"});
  k.number("train.grl_weight", 0, 1e6);
  k.integer("train.checkpoint_every", 0);
  // ood
  k.words("ood.methods", ood::score_names());
  k.integer("ood.batch_size", 1);
  k.integer("ood.embedding_points", 0);
  k.number("ood.temperature", 0, 1e9, true);
  k.number("ood.odin_temperature", 0, 1e9, true);
  k.number("ood.odin_epsilon", 0, 10);
  k.integer("ood.knn_k", 1);
  k.number("ood.react_percentile", 0, 100);
  k.integer("ood.vim_dim", 0);
  k.number("ood.gen_gamma", 0, 1e3, true);
  k.integer("ood.gen_top", 1);
  // saliency
  const int64_t images = k.integer("saliency.images", 0);
  if (images % 2 != 0) k.fail("saliency.images", "must be even (the images form pairs), got " + std::to_string(images));
  k.words("saliency.methods", saliency::method_names());
  k.word("saliency.colormap", {"viridis", "jet"});
  k.word("saliency.baseline", {"zero", "mean", "blur"});
  {
    const auto& v = k.at("saliency.cam_layer");
    const auto n = as_number(v);
    const bool word = v.is_string() && (v == "auto" || v == "branch_input");
    if (!word && (!n || *n != std::floor(*n) || *n < 0 || *n > 1e6))
      k.fail("saliency.cam_layer", "expected auto, branch_input or a backbone layer index, got " + shown(v));
  }
  {
    const auto& v = k.at("saliency.foreground_threshold");
    const auto n = as_number(v);
    const bool word = v.is_string() && (v == "auto" || v == "off");
    if (!word && (!n || *n < 0 || *n >= 1))
      k.fail("saliency.foreground_threshold", "expected auto, off or a value in [0, 1), got " + shown(v));
  }
  k.flag("saliency.randomisation");
  // run
  k.integer("run.seed", 0);
  k.integer("run.threads", 0, 4096);
  k.word("run.device", {"cpu", "cuda"});
  k.word("run.out");
  k.integer("run.dist_timeout", 1, 86400);
}

json checked(const std::string& config) {
  auto c = parse(config, "config");
  validate(c, "config");
  return c;
}

}  // namespace

std::string default_config() { return defaults().dump(2); }

std::string merge_config(const std::string& config, const std::string& patch, const std::string& where) {
  auto c = parse(config, where);
  merge(c, parse(patch, where), where, "");
  return c.dump(2);
}

void validate_config(const std::string& config, const std::string& where) { validate(parse(config, where), where); }

torch::Device make_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda") {
    if (!torch::cuda::is_available())
      throw std::runtime_error("device cuda: CUDA is not available (this LibTorch has no CUDA support or no GPU is visible)");
    return torch::Device(torch::kCUDA, 0);
  }
  throw std::invalid_argument("unknown device '" + name + "'; known: cpu, cuda");
}

OpenSetSplit make_split(const std::string& config) {
  const auto c = checked(config);
  const auto& d = c.at("data");
  SplitOptions o;
  o.fractions = d.at("fractions").get<std::vector<double>>();
  o.seed = c.at("run").at("seed").get<uint64_t>();
  o.train_per_class = d.at("train_per_class").get<int64_t>();
  o.val_per_class = d.at("val_per_class").get<int64_t>();
  o.test_per_class = d.at("test_per_class").get<int64_t>();
  o.ood_limit = d.at("ood_limit").get<int64_t>();
  o.skip_corrupt = d.at("skip_corrupt").get<bool>();
  for (const auto& e : d.at("id_classes"))
    o.id_classes.push_back(e.is_string() ? e.get<std::string>() : std::to_string(e.get<int64_t>()));
  const auto dataset = d.at("dataset").get<std::string>();
  auto root = d.at("root").get<std::string>();
  const auto ood_root = d.at("ood_root").get<std::string>();
  auto far = d.at("far_ood_root").get<std::string>();
  if (dataset == "fashion-mnist") {
    if (root.empty()) root = kFashionMnistDefaultRoot;
    if (far.empty()) far = kUciDigitsDefaultPath;
    return fashion_mnist_split(root, far, o);
  }
  if (root.empty()) throw std::invalid_argument("data.dataset " + dataset + " needs data.root (--root)");
  if (dataset == "image-folder") return image_folder_split(root, ood_root, {far}, o);
  return stanford_dogs_split(root, far, o);
}

NordF make_model(const std::string& config, int64_t num_classes, const LogFn& log) {
  const auto c = checked(config);
  const auto& m = c.at("model");
  // LibTorch seeds its default generator non-deterministically; the initial weights of a run
  // follow run.seed instead.
  torch::manual_seed(c.at("run").at("seed").get<uint64_t>());
  auto options = NordFOptions()
                     .backbone(m.at("backbone").get<std::string>())
                     .backbone_options(BackboneOptions()
                                           .drop_path_rate(m.at("drop_path").get<double>())
                                           .direct_depthwise_grad(c.at("train").at("direct_depthwise_grad").get<bool>()))
                     .image_size(m.at("image_size").get<int64_t>())
                     .num_classes(num_classes)
                     .channels(m.at("channels").get<int64_t>())
                     .norm(parse_norm(m.at("norm").get<std::string>()))
                     .similarity(parse_similarity(m.at("similarity").get<std::string>()))
                     .use_similarity(!m.at("no_similarity").get<bool>())
                     .use_reconstruction(!m.at("no_reconstruction").get<bool>())
                     .dropout(m.at("dropout").get<double>())
                     .recon_size(m.at("recon_size").get<int64_t>())
                     .decoder_width(m.at("decoder_width").get<int64_t>())
                     .decoder_blocks(m.at("decoder_blocks").get<int64_t>());
  NordF model(options);
  const auto weights = m.at("backbone_weights").get<std::string>();
  if (!weights.empty()) {
    auto report = load_weights(*model->backbone, weights);
    if (log) log("backbone weights " + weights + ": " + report.summary());
  }
  return model;
}

std::shared_ptr<ReconstructionLoss> make_recon_loss(const std::string& config, const LogFn& log) {
  const auto c = checked(config);
  const auto& t = c.at("train");
  ReconLossSpec spec;
  spec.delta = t.at("huber_delta").get<double>();
  spec.perceptual.network(t.at("perceptual_network").get<std::string>())
      .layers(t.at("perceptual_layers").get<std::vector<int64_t>>())
      .layer_weights(t.at("perceptual_layer_weights").get<std::vector<double>>())
      .distance(parse_distance(t.at("perceptual_distance").get<std::string>()))
      .delta(spec.delta);
  const auto name = t.at("recon_loss").get<std::string>();
  if (name == "perceptual") {
    auto net = make_backbone(spec.perceptual.network());
    const auto weights = t.at("perceptual_weights").get<std::string>();
    if (!weights.empty()) {
      auto report = load_weights(*net, weights);
      if (log) log("perceptual weights " + weights + ": " + report.summary());
    }
    try {
      return std::make_shared<PerceptualLoss>(net, spec.perceptual);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument("train.perceptual_layers: " + std::string(e.what()));
    }
  }
  return nordf::make_recon_loss(name, spec);
}

LoaderOptions make_loader_options(const std::string& config, bool train) {
  const auto c = checked(config);
  const auto& d = c.at("data");
  const auto& m = c.at("model");
  LoaderOptions o;
  o.batch_size = c.at("train").at("batch_size").get<int64_t>();
  o.workers = d.at("workers").get<int64_t>();
  o.seed = c.at("run").at("seed").get<uint64_t>();
  o.transform.image_size = m.at("image_size").get<int64_t>();
  const int64_t recon = m.at("recon_size").get<int64_t>();
  o.transform.recon_size = recon > 0 ? recon : o.transform.image_size / 2;
  o.augment = train;
  o.drop_last = train;
  if (train) {
    o.transform.hflip_prob = d.at("hflip").get<double>();
    o.transform.rotation_degrees = d.at("rotation").get<double>();
    o.transform.crop_scale_min = d.at("crop_scale_min").get<double>();
  }
  return o;
}

ood::EvaluatorOptions make_eval_options(const std::string& config) {
  const auto c = checked(config);
  ood::EvaluatorOptions o;
  o.methods = c.at("ood").at("methods").get<std::vector<std::string>>();
  o.loader = make_loader_options(config, false);
  o.loader.batch_size = c.at("ood").at("batch_size").get<int64_t>();
  const auto& d = c.at("ood");
  o.embedding_points = d.at("embedding_points").get<int64_t>();
  o.score_options.temperature = d.at("temperature").get<double>();
  o.score_options.odin_temperature = d.at("odin_temperature").get<double>();
  o.score_options.odin_epsilon = d.at("odin_epsilon").get<double>();
  o.score_options.knn_k = d.at("knn_k").get<int64_t>();
  o.score_options.react_percentile = d.at("react_percentile").get<double>();
  o.score_options.vim_dim = d.at("vim_dim").get<int64_t>();
  o.score_options.gen_gamma = d.at("gen_gamma").get<double>();
  o.score_options.gen_top = d.at("gen_top").get<int64_t>();
  o.device = make_device(c.at("run").at("device").get<std::string>());
  o.out_dir = c.at("run").at("out").get<std::string>();
  // A branch trained with λ = 0 is a random function: scores that read it are skipped.
  const auto& t = c.at("train");
  if (t.at("lambda_cls").get<double>() == 0) o.untrained |= ood::kClassifier;
  if (t.at("lambda_sim").get<double>() == 0) o.untrained |= ood::kSimilarity;
  if (t.at("lambda_rec").get<double>() == 0) o.untrained |= ood::kReconstruction;
  return o;
}

int64_t make_cam_layer(const std::string& config, NordF model) {
  const auto c = checked(config);
  const auto& v = c.at("saliency").at("cam_layer");
  if (v == "auto") return saliency::cam_layer_for(model);
  if (v == "branch_input") return saliency::kBranchInput;
  const auto layer = static_cast<int64_t>(*as_number(v));  // an integer in [0, 1e6] (validated)
  const int64_t n = model->backbone->num_layers();
  if (layer >= n)
    throw std::invalid_argument("saliency.cam_layer " + std::to_string(layer) + ": " + model->backbone->backbone_name() +
                                " has layers 0.." + std::to_string(n - 1) + " (or use branch_input)");
  return layer;
}

std::optional<double> make_foreground_threshold(const std::string& config) {
  const auto c = checked(config);
  const auto& v = c.at("saliency").at("foreground_threshold");
  if (v == "off") return std::nullopt;
  if (v == "auto") return c.at("data").at("dataset") == "fashion-mnist" ? std::optional<double>(0.1) : std::nullopt;
  return *as_number(v);
}

TrainOptions make_train_options(const std::string& config) {
  const auto c = checked(config);
  const auto& t = c.at("train");
  TrainOptions o;
  o.epochs = t.at("epochs").get<int64_t>();
  o.lr = t.at("lr").get<double>();
  o.warmup_epochs = t.at("warmup_epochs").get<double>();
  o.weight_decay = t.at("weight_decay").get<double>();
  o.decoupled_weight_decay = t.at("optimizer").get<std::string>() == "adamw";
  o.lr_schedule = parse_lr_schedule(t.at("lr_schedule").get<std::string>());
  o.loss_weights = {t.at("lambda_sim").get<double>(), t.at("lambda_cls").get<double>(), t.at("lambda_rec").get<double>()};
  o.sim_eps = t.at("sim_eps").get<double>();
  o.grad_clip_norm = t.at("grad_clip").get<double>();
  o.max_nonfinite_steps = t.at("max_nonfinite_steps").get<int64_t>();
  o.max_steps = t.at("max_steps").get<int64_t>();
  o.grl.kind = parse_grl_schedule(t.at("grl_schedule").get<std::string>());
  o.grl.weight = t.at("grl_weight").get<double>();
  o.checkpoint_every = t.at("checkpoint_every").get<int64_t>();
  o.seed = c.at("run").at("seed").get<uint64_t>();
  o.device = make_device(c.at("run").at("device").get<std::string>());
  o.out_dir = c.at("run").at("out").get<std::string>();
  o.config_json = c.dump(2);
  return o;
}

}  // namespace nordf::experiment
