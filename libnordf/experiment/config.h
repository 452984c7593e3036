#pragma once
/// @file
/// The run configuration: one JSON object with the sections data, model, train, ood, saliency and
/// run, read by nordf-basic, by every run of a study and by `experiment::run`. Configurations
/// cross this header as JSON text, so that no JSON library leaks into the public API; the keys,
/// their types and their meaning are listed in docs/apps.md.

#include <libnordf/data/dataset.h>
#include <libnordf/data/loader.h>
#include <libnordf/loss/loss.h>
#include <libnordf/model/nordf_model.h>
#include <libnordf/ood/evaluator.h>
#include <libnordf/train/trainer.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace nordf::experiment {

/// The built-in defaults of every setting, as pretty-printed JSON text (the embedded default run:
/// Fashion-MNIST classes 0–4, convnextv2_atto at 32 px, 3 epochs).
std::string default_config();

/// Overrides `config` with `patch` (both JSON objects as text) key by key: objects merge
/// recursively, every other value (arrays included) is replaced. Returns the merged text.
/// Throws `std::invalid_argument` "<where>: unknown setting '<section>.<key>'" for a key the
/// defaults do not have, or "<where>: <section>.<key>: expected <type>, got <value>" for a value
/// whose JSON type differs from the default's (an integer is accepted where a number is expected).
std::string merge_config(const std::string& config, const std::string& patch, const std::string& where);

/// Checks every setting of a complete configuration: JSON types, names against their registries
/// (backbones, scores, losses, saliency methods), enumerations and ranges. Throws
/// `std::invalid_argument` "<where>: <section>.<key>: <reason>" for the first bad setting.
void validate_config(const std::string& config, const std::string& where = "config");

/// Receives one line of human-readable log output.
using LogFn = std::function<void(const std::string&)>;

/// The open-set split a configuration describes (data.*, run.seed).
OpenSetSplit make_split(const std::string& config);
/// The model a configuration describes, initialised from run.seed (LibTorch's default generator
/// is reseeded), with backbone weights loaded (and their report logged) if configured.
NordF make_model(const std::string& config, int64_t num_classes, const LogFn& log = {});
/// The reconstruction loss (perceptual network weights loaded and logged if configured).
std::shared_ptr<ReconstructionLoss> make_recon_loss(const std::string& config, const LogFn& log);
/// Loader options (batch size, workers, transforms; augmentation when `train`).
LoaderOptions make_loader_options(const std::string& config, bool train);
/// OOD evaluation options (methods, batch size, device, output directory).
ood::EvaluatorOptions make_eval_options(const std::string& config);
/// Training options, without callbacks.
TrainOptions make_train_options(const std::string& config);
/// The Grad-CAM layer of the saliency stage: saliency.cam_layer "auto" (`saliency::cam_layer_for`),
/// "branch_input" or a backbone layer index. Throws `std::invalid_argument` naming a layer the
/// backbone lacks.
int64_t make_cam_layer(const std::string& config, NordF model);
/// The brightness above which a pixel counts as foreground in the saliency stage's background
/// measurement (0: every pixel brighter than black); none = off. "auto" is 0.1 on Fashion-MNIST,
/// whose background is black, else off.
std::optional<double> make_foreground_threshold(const std::string& config);
/// The device named by `name` ("cpu" or "cuda"). Throws `std::runtime_error` if CUDA is asked for
/// but absent.
torch::Device make_device(const std::string& name);

}  // namespace nordf::experiment
