// The standard architectures (REFERENCE.md §2), CompressAI layer order and names:
// factorized (bmshj2018-factorized), hyperprior (bmshj2018-hyperprior),
// mean-scale (mbt2018-mean). Created by name from the registry.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lic/entropy_models.h"

namespace lic {

// Fixed training noise (CompressAI's layouts) so a forward/backward can be reproduced.
struct Noise {
  torch::Tensor y;  // (B, M, H/16, W/16)
  torch::Tensor z;  // (B, N, H/64, W/64), hyperprior models only
};

struct ForwardOutput {
  torch::Tensor x_hat;
  torch::Tensor y, z;          // latents before quantization (z undefined for factorized)
  torch::Tensor y_hat, z_hat;  // noisy (training) or rounded (evaluation)
  torch::Tensor scales_hat, means_hat;
  // Likelihoods of every latent, in model order: {"y", ...}, {"z", ...}.
  std::vector<std::pair<std::string, torch::Tensor>> likelihoods;
};

// The integer symbols the coder writes for one latent, the table (group) each uses, and
// the exact code length of each under the quantized CDFs: the basis of ce / entropy / kl.
struct LatentSymbols {
  std::string name;      // "y" or "z"
  torch::Tensor symbols;  // int64, flattened
  torch::Tensor groups;   // int64: channel (bottleneck) or scale-table index (Gaussian)
  torch::Tensor bits;     // float64 per symbol
};

class CompressionModel : public torch::nn::Module {
 public:
  CompressionModel(std::string name, int64_t N, int64_t M);

  const std::string& name() const { return name_; }
  int64_t N() const { return N_; }
  int64_t M() const { return M_; }
  virtual bool has_hyperprior() const { return false; }

  virtual ForwardOutput forward(const torch::Tensor& x, const Noise* noise = nullptr) = 0;
  // Coded symbols of y (and z) for the latents of a forward pass, with the scales the
  // decoder will see (from the rounded z). Tables must be current (update_tables()).
  virtual std::vector<LatentSymbols> coded_symbols(const ForwardOutput& out) = 0;
  // x: (1, 3, H, W) with H, W multiples of 64. Streams in order {y, z}.
  virtual std::vector<std::vector<uint8_t>> compress(const torch::Tensor& x) = 0;
  // Inverse of compress for an image of padded size H x W; returns x_hat clamped to [0, 1].
  virtual torch::Tensor decompress(const std::vector<std::vector<uint8_t>>& streams, int64_t H, int64_t W) = 0;

  torch::Tensor aux_loss() { return entropy_bottleneck->aux_loss(); }
  // Parameters of the transforms and densities / the bottleneck quantiles (aux optimizer).
  std::vector<torch::Tensor> main_parameters();
  std::vector<torch::Tensor> aux_parameters();

  // Rebuilds the CDF tables when the weights (or the scale table) changed since the last
  // build, so compress / eval / save / export never see stale tables. With
  // bisection_quantiles, the quantiles are first re-solved by bisection.
  void update_tables(bool force = false);
  bool bisection_quantiles = false;

  // 64-bit hash of every parameter and buffer (tables included), after update_tables().
  uint64_t fingerprint();

  EntropyBottleneck entropy_bottleneck{nullptr};
  GaussianConditional gaussian_conditional{nullptr};  // hyperprior models only

 private:
  std::string name_;
  int64_t N_, M_;
  uint64_t eb_key_ = 0, gc_key_ = 0;
};

using ModelPtr = std::shared_ptr<CompressionModel>;

struct ModelOptions {
  std::string name = "hyperprior";
  int64_t N = 128, M = 192;
  int64_t scale_levels = 64;  // entries of the Gaussian scale table (CompressAI: 64)
};

// Registry. Accepts lic names and CompressAI names (bmshj2018-hyperprior, ...).
ModelPtr create_model(const ModelOptions& opts);
std::vector<std::string> model_names();
std::string canonical_model_name(const std::string& name);  // lic::Error if unknown
std::string compressai_name(const std::string& name);       // e.g. "bmshj2018-hyperprior"
// CompressAI's zoo sizes for quality 1..8.
std::pair<int64_t, int64_t> zoo_sizes(const std::string& name, int quality);

// State dict = every parameter and buffer by dotted name.
std::vector<std::pair<std::string, torch::Tensor>> state_dict(const torch::nn::Module& m);
// Copies values into the model; table buffers and the scale table are resized to fit.
// Missing / unexpected / mis-shaped keys are collected into one lic::Error.
void load_state_dict(torch::nn::Module& m, const std::vector<std::pair<std::string, torch::Tensor>>& sd);

uint64_t hash_tensors(const std::vector<torch::Tensor>& ts, uint64_t seed = 1469598103934665603ull);

}  // namespace lic
