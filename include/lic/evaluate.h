// Per-image evaluation of a model (real encode / decode through the .lic container) and of
// the classic codecs, and the reports built from it (CompressAI-style JSON, CSV, a table).
//
// Metrics of one image (keys as in the JSON):
//   bpp            actual rate: whole .lic file (header, lengths, CRC) * 8 / (H * W)
//   bpp_payload    stream bytes only * 8 / (H * W)
//   bpp_estimated  -sum log2(likelihoods) of the eval-mode forward / (H * W): CompressAI's
//                  "estimated" rate (padding-region latents included)
//   ce             sum of the exact code lengths of the coded symbols under the quantized
//                  CDF tables (coded_symbols) / (H * W): what an ideal coder would spend
//   entropy        plug-in entropy of the coded symbols, per (latent, group) distribution
//                  (group = channel for the bottleneck, scale-table index for the Gaussian),
//                  in bits / (H * W)
//   kl             ce - entropy (>= 0): the bits lost to the mismatch between prior and data
//   psnr-rgb       PSNR of the 8-bit rounded reconstruction vs the 8-bit input (dB)
//   ms-ssim-rgb    MS-SSIM on the same 8-bit images (raw value, not dB)
//   encoding_time  seconds, wall: pad + analysis + entropy coding + serialize
//   decoding_time  seconds, wall: parse + model check + entropy decoding + synthesis + crop
// plus per latent (per-image records only): bpp_payload_<y|z>, ce_<y|z>,
// bpp_estimated_<y|z>, entropy_<y|z>, and "decoded_matches_forward" (1 when the decoder's
// output equals the eval-mode forward bit for bit, which it must).
// Classic codecs: bpp (whole encoded file), psnr-rgb, ms-ssim-rgb, encoding_time,
// decoding_time (the OpenCV encoder / decoder call only).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "lic/bd_rate.h"
#include "lic/checkpoint.h"
#include "lic/image.h"
#include "lic/models.h"

namespace lic {

// Metrics of one image at one operating point, in insertion order.
struct ImageRecord {
  std::string image;  // path relative to the data folder
  int64_t height = 0, width = 0;
  std::vector<std::pair<std::string, double>> values;

  void set(const std::string& key, double v);
  double get(const std::string& key) const;  // NaN when absent
  bool has(const std::string& key) const;
};

// One operating point: a model, or a classic codec at one quality.
struct EvalPoint {
  std::string label;  // model file / "q=50"
  int quality = 0;    // classic codecs; 0 for models
  std::vector<ImageRecord> images;

  // Mean of `key` over the images that have it; NaN when none has it.
  double mean(const std::string& key) const;
};

// One RD curve: one point for a model, one per quality for a classic codec (or several
// models evaluated as one curve).
struct EvalReport {
  std::string name, description;
  bool classic = false;
  std::vector<EvalPoint> points;

  // The result keys in report order (the ones present in at least one image).
  std::vector<std::string> keys() const;
  // {"name", "description", "results": {key: [mean per point]}, "per_image": [...]}.
  // Classic reports add "quality": [...] to results and "quality" to each per-image entry.
  nlohmann::ordered_json to_json() const;
};

// One report -> that object; several -> an array of objects.
nlohmann::ordered_json reports_to_json(const std::vector<EvalReport>& reports);
// One row per image per point: name,point,quality,image,height,width,<union of keys>.
std::string reports_to_csv(const std::vector<EvalReport>& reports);
// Human-readable table: name, point, bpp, bpp_estimated, psnr, ms-ssim, enc s, dec s.
std::string reports_table(const std::vector<EvalReport>& reports);

// Plug-in entropy in bits of `symbols` grouped by `groups` (same length, int64):
// sum over groups g of sum over values s of -c(g,s) log2(c(g,s) / n(g)).
double plugin_entropy_bits(const torch::Tensor& symbols, const torch::Tensor& groups);

// Evaluates one image with a model: encode, serialize, parse, decode, plus an eval-mode
// forward for the estimates. The model must already be on the device to evaluate on.
ImageRecord evaluate_model_image(CompressionModel& m, const Image& img, const std::string& name);
ImageRecord evaluate_classic_image(const std::string& codec, int quality, const Image& img,
                                   const std::string& name);

// Progress: called after each image (all points of it) with (images done, images total).
using EvalProgress = std::function<void(size_t done, size_t total)>;

// Evaluates the images (paths; names are made relative to `root`) with each model as one
// point of the report. `labels` name the points (same length as models).
EvalReport evaluate_models(const std::vector<CompressionModel*>& models, const std::vector<std::string>& labels,
                           const std::vector<std::string>& images, const std::string& root,
                           const EvalProgress& progress = {});
// One point per quality.
EvalReport evaluate_classic(const std::string& codec, const std::vector<int>& qualities,
                            const std::vector<std::string>& images, const std::string& root,
                            const EvalProgress& progress = {});

// RD curves from a report JSON (an object or an array of objects): for each report its
// name and the points zipped from results[rate_key] and results[quality_key]. With
// quality_key "ms-ssim-rgb" the values are converted to dB (-10 log10(1 - v)).
// Malformed input -> lic::Error naming `what` (e.g. the file).
std::vector<std::pair<std::string, std::vector<RdPoint>>> rd_curves_from_json(
    const nlohmann::json& j, const std::string& what, const std::string& quality_key = "psnr-rgb",
    const std::string& rate_key = "bpp");

}  // namespace lic
