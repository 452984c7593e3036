#pragma once
/// @file
/// Umbrella header: everything public in libnordf.

#include <libnordf/core/io.h>
#include <libnordf/core/json.h>
#include <libnordf/core/memory.h>
#include <libnordf/core/registry.h>
#include <libnordf/core/version.h>

#include <libnordf/backbone/backbone.h>
#include <libnordf/backbone/convnext.h>
#include <libnordf/backbone/depthwise.h>
#include <libnordf/backbone/vgg.h>
#include <libnordf/backbone/vit.h>

#include <libnordf/branch/blocks.h>
#include <libnordf/branch/classification.h>
#include <libnordf/branch/grl.h>
#include <libnordf/branch/reconstruction.h>
#include <libnordf/branch/similarity.h>

#include <libnordf/model/nordf_model.h>

#include <libnordf/loss/loss.h>

#include <libnordf/data/dataset.h>
#include <libnordf/data/image.h>
#include <libnordf/data/loader.h>
#include <libnordf/data/mat.h>
#include <libnordf/data/sources.h>
#include <libnordf/data/transforms.h>

#include <libnordf/train/schedule.h>
#include <libnordf/train/trainer.h>

#include <libnordf/weights/weights.h>

#include <libnordf/ood/evaluator.h>
#include <libnordf/ood/metrics.h>
#include <libnordf/ood/scores.h>

#include <libnordf/report/plots.h>

#include <libnordf/saliency/faithfulness.h>
#include <libnordf/saliency/render.h>
#include <libnordf/saliency/report.h>
#include <libnordf/saliency/saliency.h>

#include <libnordf/dist/distributed.h>

#include <libnordf/experiment/config.h>
#include <libnordf/experiment/experiment.h>

#include <libnordf/study/study.h>
