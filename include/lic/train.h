// `lic train`: rate-distortion training (REFERENCE.md §3) with the rate accounting of
// rate_stats.h logged side by side. Configuration = defaults < YAML file < flags.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lic/models.h"

namespace lic {

struct TrainConfig {
  std::string model = "hyperprior";
  int64_t N = 128, M = 192;
  int64_t scale_levels = 256;  // finer than CompressAI's 64: coded y within ~0.3% of its estimate
  int quality = 0;             // 1..8 picks lambda from the standard table (0: use lambda)
  double lambda = 0.013;
  std::string metric = "mse";  // mse | ms-ssim
  std::string data, val, out = "runs/default";
  int64_t steps = 10000, batch_size = 8, patch = 256;
  double lr = 1e-4, aux_lr = 1e-3, clip_max_norm = 1.0;
  std::string quantiles = "aux";  // aux (CompressAI's auxiliary loss) | bisection
  int64_t log_every = 100, val_every = 1000, ckpt_every = 500;
  int64_t val_max_images = 24;
  std::vector<int64_t> lr_milestones;  // step decay: lr *= lr_gamma at each
  double lr_gamma = 0.1;
  int64_t plateau_patience = 0;  // validations without improvement before lr *= plateau_factor (0: off)
  double plateau_factor = 0.5;
  uint64_t seed = 0;
  int64_t max_bad_steps = 20;  // consecutive NaN/Inf steps before stopping
  int prefetch = 4;
  std::string device = "cpu";  // set by --device (not a YAML key: it belongs to the machine)
  bool resume = false, force = false;

  // Overwrites fields present in a YAML file; unknown keys are errors (typos).
  void load_yaml(const std::string& path);
  // Checks ranges and paths; lic::Error with one clear message.
  void validate() const;
  std::string to_yaml() const;
  nlohmann::json to_json() const;
};

double lambda_for_quality(const std::string& metric, int quality);

// Collective operations for data-parallel training (implemented over c10d); null = one process.
struct Collective {
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual void broadcast(std::vector<torch::Tensor>& tensors) = 0;       // from rank 0
  virtual void all_reduce_mean(std::vector<torch::Tensor>& tensors) = 0;  // in place
  virtual void all_reduce_sum(std::vector<torch::Tensor>& tensors) = 0;
  virtual void barrier() = 0;
};

struct TrainResult {
  int64_t step = 0;
  double last_loss = 0;
  int exit_code = 0;  // 0 done, 130/143 interrupted, 3 stopped on bad steps
};

TrainResult train(const TrainConfig& cfg, Collective* dist = nullptr);

}  // namespace lic
