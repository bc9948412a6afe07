// The rate estimator against known truth (REFERENCE.md §1): ce -> H(p) and kl -> 0 for a
// fitted model; kl = analytic KL for a deliberately mis-scaled one.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lic/entropy_models.h"
#include "lic/rate_stats.h"

using namespace lic;

namespace {

LatentSymbols as_latent(const torch::Tensor& sym, const torch::Tensor& groups, const torch::Tensor& bits) {
  return {"y", sym.reshape(-1).to(torch::kLong), groups.reshape(-1).to(torch::kLong), bits.reshape(-1)};
}

}  // namespace

TEST(RateStats, PluginEntropyOfKnownHistogram) {
  // group 0: {a: 2, b: 2} -> 4 bits; group 1: {c: 4} -> 0 bits
  std::unordered_map<int64_t, int64_t> h = {{0, 2}, {1, 2}, {(int64_t(1) << 32) | 5, 4}};
  EXPECT_NEAR(plugin_entropy_bits(h), 4.0, 1e-12);
}

TEST(RateStats, FittedBottleneckReachesLaplaceEntropy) {
  torch::manual_seed(0);
  const double b = 2.0;  // discretized Laplace p(k) ~ exp(-|k|/b)
  std::vector<double> p;
  double z = 0;
  for (int k = -80; k <= 80; ++k) z += std::exp(-std::abs(k) / b);
  double H = 0;
  for (int k = -80; k <= 80; ++k) {
    const double q = std::exp(-std::abs(k) / b) / z;
    p.push_back(q);
    H -= q * std::log2(q);
  }
  std::mt19937 rng(1);
  std::discrete_distribution<int> dist(p.begin(), p.end());
  const int n = 20000;
  std::vector<float> xs(n);
  for (auto& v : xs) v = static_cast<float>(dist(rng) - 80);
  auto x = torch::tensor(xs).reshape({1, 1, n});

  EntropyBottleneck eb(1);
  std::vector<torch::Tensor> params;
  for (auto& kv : eb->named_parameters())
    if (kv.key() != "quantiles") params.push_back(kv.value());
  torch::optim::Adam opt(params, torch::optim::AdamOptions(0.05));
  for (int it = 0; it < 400; ++it) {
    opt.zero_grad();
    auto nll = -torch::log2(eb->likelihood(x).clamp_min(1e-9)).mean();
    nll.backward();
    opt.step();
  }
  eb->update_quantiles_bisection();
  eb->update();
  auto sym = eb->symbols(x.reshape({1, 1, n, 1}));
  auto idx = eb->indexes(sym.sizes());
  auto bits = eb->code_lengths(sym, idx);
  RateAccumulator acc;
  acc.add({as_latent(sym, idx, bits)}, n);  // one "pixel" per symbol: bpp = bits/symbol
  EXPECT_NEAR(acc.ce_bpp() / H, 1.0, 0.02) << "ce " << acc.ce_bpp() << " H " << H;
  EXPECT_GE(acc.kl_bpp(), 0.0);
  EXPECT_LT(acc.kl_bpp(), 0.02 * H);
}

TEST(RateStats, MisScaledGaussianShowsAnalyticKL) {
  const double sigma = 2.0, sigma_model = 4.0;
  GaussianConditional gc(torch::tensor({1.0f, 2.0f, 4.0f, 8.0f}));
  gc->update();
  auto phi = [](double v) { return 0.5 * std::erfc(-v / std::sqrt(2.0)); };
  auto pk = [&](int k, double s) { return phi((k + 0.5) / s) - phi((k - 0.5) / s); };
  double kl = 0;
  for (int k = -60; k <= 60; ++k) {
    const double a = pk(k, sigma), q = pk(k, sigma_model);
    if (a > 0) kl += a * std::log2(a / q);
  }
  torch::manual_seed(3);
  const int n = 200000;
  auto y = torch::randn({1, 1, n, 1}) * sigma;
  auto sym = gc->symbols(y, torch::Tensor());
  auto idx = gc->build_indexes(torch::full_like(y, sigma_model));
  ASSERT_EQ(idx[0][0][0][0].item<int>(), 2);
  auto bits = gc->code_lengths(sym, idx);
  RateAccumulator acc;
  acc.add({as_latent(sym, idx, bits)}, n);
  EXPECT_GE(acc.kl_bpp(), 0.0);
  EXPECT_NEAR(acc.kl_bpp() / kl, 1.0, 0.10) << "estimated " << acc.kl_bpp() << " analytic " << kl;
  // and a well-scaled model wastes almost nothing
  RateAccumulator good;
  auto idx2 = gc->build_indexes(torch::full_like(y, sigma));
  good.add({as_latent(sym, idx2, gc->code_lengths(sym, idx2))}, n);
  EXPECT_LT(good.kl_bpp(), 0.1 * kl);
}
