#include <gtest/gtest.h>

#include <cmath>

#include "lic/entropy_models.h"
#include "lic/layers.h"

using namespace lic;

namespace {
// GDN with effective beta = [1, 2] and gamma = [[.1, .2], [.3, .4]].
GDN make_gdn(bool inverse) {
  GDN g(2, inverse);
  torch::NoGradGuard ng;
  g->beta.copy_(g->beta_reparam->init(torch::tensor({1.0f, 2.0f})));
  g->gamma.copy_(g->gamma_reparam->init(torch::tensor({{0.1f, 0.2f}, {0.3f, 0.4f}})));
  return g;
}
}  // namespace

TEST(GDN, MatchesHandComputedValues) {
  auto x = torch::tensor({1.0f, 2.0f}).reshape({1, 2, 1, 1});
  // norm_i = beta_i + sum_j gamma_ij x_j^2: 1 + .1 + .8 = 1.9 and 2 + .3 + 1.6 = 3.9
  auto y = make_gdn(false)->forward(x).reshape(-1);
  EXPECT_NEAR(y[0].item<float>(), 1.0 / std::sqrt(1.9), 1e-5);
  EXPECT_NEAR(y[1].item<float>(), 2.0 / std::sqrt(3.9), 1e-5);
  auto z = make_gdn(true)->forward(x).reshape(-1);
  EXPECT_NEAR(z[0].item<float>(), 1.0 * std::sqrt(1.9), 1e-5);
  EXPECT_NEAR(z[1].item<float>(), 2.0 * std::sqrt(3.9), 1e-5);
}

TEST(GDN, DefaultInitIsNearIdentityScaling) {
  GDN g(3);
  auto x = torch::full({1, 3, 2, 2}, 0.5f);
  // beta = 1, gamma = 0.1 I: y = x / sqrt(1 + 0.1 x^2)
  auto y = g->forward(x);
  EXPECT_NEAR(y[0][0][0][0].item<float>(), 0.5 / std::sqrt(1.0 + 0.1 * 0.25), 1e-5);
}

TEST(GDN, ReparametrisationKeepsValuesNonNegative) {
  NonNegativeParametrizer r(1e-6);
  auto p = r->init(torch::tensor({-3.0f, 0.0f, 4.0f}));
  auto v = r->forward(p);
  EXPECT_GE(v.min().item<float>(), 0.0f);
  EXPECT_NEAR(v[2].item<float>(), 4.0f, 1e-5);
}

TEST(LowerBound, GradientPassesAboveBoundOrWhenNegative) {
  auto x = torch::tensor({0.5f, 2.0f, 0.5f, 1.0f}, torch::requires_grad());
  auto bound = torch::tensor({1.0f});
  auto y = lower_bound(x, bound);
  EXPECT_TRUE(torch::equal(y.detach(), torch::tensor({1.0f, 2.0f, 1.0f, 1.0f})));
  y.backward(torch::tensor({1.0f, 1.0f, -1.0f, 3.0f}));
  // below & positive grad: blocked; above: passes; below & negative: passes; at bound: passes
  EXPECT_TRUE(torch::equal(x.grad(), torch::tensor({0.0f, 1.0f, -1.0f, 3.0f})));
}

TEST(EntropyBottleneck, LikelihoodsOverIntegerGridSumToOne) {
  torch::manual_seed(0);
  EntropyBottleneck eb(4);
  eb->eval();
  auto grid = torch::arange(-300, 301).to(torch::kFloat32).reshape({1, 1, -1}).repeat({4, 1, 1});
  torch::NoGradGuard ng;
  auto total = eb->likelihood(grid).sum(-1).reshape(-1);
  for (int c = 0; c < 4; ++c) EXPECT_NEAR(total[c].item<float>(), 1.0f, 1e-3) << "channel " << c;
}

TEST(EntropyBottleneck, BisectionPutsTailsAtTailMass) {
  torch::manual_seed(1);
  EntropyBottleneck eb(3);
  eb->update_quantiles_bisection();
  torch::NoGradGuard ng;
  auto logits = eb->logits_cumulative(eb->quantiles, true);
  auto cdf = torch::sigmoid(logits.to(torch::kDouble)).reshape({3, 3});
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(cdf[c][0].item<double>() / 5e-10, 1.0, 1e-2);  // lower tail = tail_mass / 2
    EXPECT_NEAR(cdf[c][1].item<double>(), 0.5, 1e-6);           // median
    EXPECT_NEAR((1 - cdf[c][2].item<double>()) / 5e-10, 1.0, 1e-2);
  }
  EXPECT_LT(eb->aux_loss().item<float>(), 1e-2);
}

TEST(EntropyBottleneck, EvaluationRoundsAroundMedian) {
  EntropyBottleneck eb(2);
  {
    torch::NoGradGuard ng;
    eb->quantiles.index_put_({torch::indexing::Slice(), 0, 1}, torch::tensor({0.3f, -0.2f}));
  }
  auto x = torch::tensor({0.75f, 0.75f}).reshape({1, 2, 1, 1});
  auto [x_hat, lik] = eb->forward(x, false);
  EXPECT_NEAR(x_hat[0][0][0][0].item<float>(), 0.3f, 1e-6);   // round(0.45) + 0.3
  EXPECT_NEAR(x_hat[0][1][0][0].item<float>(), 0.8f, 1e-6);   // round(0.95) - 0.2
  EXPECT_GT(lik.min().item<float>(), 0.0f);
}

TEST(GaussianConditional, LikelihoodMatchesErfcFormula) {
  GaussianConditional gc;
  auto y = torch::tensor({0.0f, 1.0f, -2.0f, 3.0f, 0.2f});
  auto s = torch::tensor({1.0f, 0.5f, 2.0f, 0.05f, 10.0f});
  auto mu = torch::tensor({0.0f, 0.3f, -1.0f, 0.0f, 0.0f});
  auto lik = gc->likelihood(y, s, mu);
  auto phi = [](double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); };
  for (int i = 0; i < 5; ++i) {
    double v = std::abs(y[i].item<double>() - mu[i].item<double>());
    double sc = std::max(s[i].item<double>(), 0.11);  // scale lower bound
    double want = phi((0.5 - v) / sc) - phi((-0.5 - v) / sc);
    EXPECT_NEAR(lik[i].item<double>(), want, 1e-6) << i;
  }
}

TEST(GaussianConditional, IndexesPickSmallestTableEntryAtLeastScale) {
  GaussianConditional gc;
  auto table = gc->scale_table;
  auto s = torch::stack({table[0] - 0.01, table[5], table[5] + 1e-4, torch::tensor(1e6f)});
  auto idx = gc->build_indexes(s);
  EXPECT_EQ(idx[0].item<int>(), 0);
  EXPECT_EQ(idx[1].item<int>(), 5);
  EXPECT_EQ(idx[2].item<int>(), 6);
  EXPECT_EQ(idx[3].item<int>(), 63);
}
