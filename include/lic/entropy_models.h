// Entropy models (REFERENCE.md §2): the factorized EntropyBottleneck and the
// GaussianConditional, with CompressAI's parameter / buffer names, training-time noise,
// evaluation-time rounding, and the CDF tables the rANS coder uses.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "lic/entropy_coding.h"
#include "lic/layers.h"

namespace lic {

// Time spent inside the rANS coder (all entropy models of the process), for `lic bench`.
struct CodingClock {
  static double encode_s, decode_s;
  static int64_t symbols;
  static void reset() { encode_s = decode_s = 0, symbols = 0; }
};

// What CompressAI calls EntropyModel: the quantized CDF tables (_quantized_cdf,
// _cdf_length, _offset) and the likelihood lower bound.
struct EntropyModelImpl : torch::nn::Module {
  explicit EntropyModelImpl(double likelihood_bound = 1e-9);

  // Tables as the coder reads them (copied out of the buffers).
  ec::CdfTables tables() const;
  bool has_tables() const { return quantized_cdf.numel() > 0; }
  // Code length in bits (float64, same shape as `values`) of each integer symbol under the
  // quantized table `indexes` selects, escapes included: exactly what rANS will spend.
  torch::Tensor code_lengths(const torch::Tensor& values, const torch::Tensor& indexes) const;

  std::vector<uint8_t> encode(const torch::Tensor& values, const torch::Tensor& indexes) const;
  torch::Tensor decode(const std::vector<uint8_t>& stream, const torch::Tensor& indexes) const;

  torch::Tensor quantized_cdf, cdf_length, offset;  // int32 buffers, resized by update()
  LowerBound likelihood_lower_bound{nullptr};

 protected:
  // Fills the buffers from per-row PMFs (rows of `pmf`, first lengths[i] entries) plus tails.
  void set_tables_from_pmf(const torch::Tensor& pmf, const torch::Tensor& tail_mass,
                           const torch::Tensor& pmf_length, const torch::Tensor& new_offset);
};

// Factorized density per channel (Ballé 2018, appendix 6.1).
struct EntropyBottleneckImpl : EntropyModelImpl {
  explicit EntropyBottleneckImpl(int64_t channels, std::vector<int64_t> filters = {3, 3, 3, 3},
                                 double init_scale = 10.0, double tail_mass = 1e-9);

  // x: (B, C, H, W) -> (x_tilde or x_hat, likelihoods). `noise`, when given, replaces the
  // uniform training noise; it is laid out as (C, 1, B*H*W) like CompressAI's.
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x, bool training,
                                                  const torch::Tensor& noise = {});
  // The monotone network F: inputs (C, 1, n) -> CDF logits (C, 1, n).
  torch::Tensor logits_cumulative(const torch::Tensor& inputs, bool stop_gradient);
  torch::Tensor likelihood(const torch::Tensor& values);  // (C, 1, n)
  torch::Tensor medians() const;                          // (C)
  torch::Tensor aux_loss();                               // sum |F(quantiles) - target|
  // Finds the quantiles F^-1(target) by bisection (no aux optimizer needed).
  void update_quantiles_bisection();
  // Rebuilds the CDF tables from the current weights and quantiles.
  void update();

  torch::Tensor symbols(const torch::Tensor& x) const;  // round(x - median), int32 (B,C,H,W)
  torch::Tensor indexes(at::IntArrayRef shape) const;  // channel index per element
  std::vector<uint8_t> compress(const torch::Tensor& x) const;   // x: (1, C, H, W)
  torch::Tensor decompress(const std::vector<uint8_t>& stream, int64_t height, int64_t width) const;

  int64_t channels;
  std::vector<int64_t> filters;
  double init_scale, tail_mass;
  std::vector<torch::Tensor> matrices, biases, factors;
  torch::Tensor quantiles, target;
};
TORCH_MODULE(EntropyBottleneck);

// exp(linspace(log(min), log(max), levels)): CompressAI's table is 64 levels.
torch::Tensor make_scale_table(int64_t levels = 64, double min = 0.11, double max = 256.0);

// Gaussian (mean-)scale conditional: y ~ N(mu, sigma) convolved with U(-1/2, 1/2).
struct GaussianConditionalImpl : EntropyModelImpl {
  explicit GaussianConditionalImpl(const torch::Tensor& scale_table = make_scale_table(),
                                   double scale_bound = 0.11, double tail_mass = 1e-9);

  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& y, const torch::Tensor& scales,
                                                  const torch::Tensor& means, bool training,
                                                  const torch::Tensor& noise = {});
  torch::Tensor likelihood(const torch::Tensor& values, const torch::Tensor& scales,
                           const torch::Tensor& means);
  // Index of the smallest scale-table entry >= the (lower-bounded) scale.
  torch::Tensor build_indexes(const torch::Tensor& scales) const;
  void update();

  torch::Tensor symbols(const torch::Tensor& y, const torch::Tensor& means) const;  // round(y - mu)
  std::vector<uint8_t> compress(const torch::Tensor& y, const torch::Tensor& indexes,
                                const torch::Tensor& means) const;
  torch::Tensor decompress(const std::vector<uint8_t>& stream, const torch::Tensor& indexes,
                           const torch::Tensor& means) const;

  double tail_mass;
  torch::Tensor scale_table, scale_bound;
  LowerBound lower_bound_scale{nullptr};
};
TORCH_MODULE(GaussianConditional);

// Phi(x) = 0.5 * erfc(-x / sqrt(2)).
torch::Tensor standardized_cumulative(const torch::Tensor& x);

}  // namespace lic
