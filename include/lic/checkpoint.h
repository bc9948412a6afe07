// Training checkpoints and deployable model files. Both are torch.save-compatible zip
// archives of a dict (Python's torch.load reads them): "lic.meta" (JSON string),
// "state.<name>" tensors (weights and CDF tables), and for checkpoints the optimizer,
// scheduler and RNG state. Written atomically; the previous file stays valid until the
// new one is complete.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lic/models.h"

namespace lic {

struct ModelMeta {
  std::string name;  // registry name
  int64_t N = 0, M = 0;
  int64_t scale_levels = 64;
  double lambda = 0.0;
  int quality = 0;             // 0 when lambda was given directly
  std::string metric = "mse";  // "mse" or "ms-ssim"
  bool bisection_quantiles = false;
  uint64_t fingerprint = 0;

  nlohmann::json to_json() const;
  static ModelMeta from_json(const nlohmann::json& j);
};

struct Checkpoint {
  ModelMeta meta;
  ModelPtr model;
  int64_t step = 0;
  nlohmann::json train_state;       // scheduler, best loss, data-order RNG, counters ...
  std::vector<char> optimizer;      // torch::serialize archive bytes (empty in exports)
  std::vector<char> aux_optimizer;
  torch::Tensor torch_rng;          // CPU generator state
};

void save_checkpoint(const std::string& path, Checkpoint& ckpt);
Checkpoint load_checkpoint(const std::string& path);
// A deployable model: weights + tables + meta, no optimizer state.
void export_model(const std::string& path, CompressionModel& model, const ModelMeta& meta);
// Loads the model of a checkpoint or an export, in eval mode with current CDF tables.
ModelPtr load_model(const std::string& path, ModelMeta* meta = nullptr);

// torch::optim state to bytes and back.
std::vector<char> optimizer_bytes(torch::optim::Optimizer& opt);
void load_optimizer_bytes(torch::optim::Optimizer& opt, const std::vector<char>& bytes);

}  // namespace lic
