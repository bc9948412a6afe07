// Golden equivalence with CompressAI v1.2.4 (tests/golden, trimmed from ../shared/golden by
// scripts/trim_golden.py): same weights -> same latents, likelihoods, CDF tables,
// bitstreams and training gradients.
#include <gtest/gtest.h>

#include <cmath>

#include "lic/compressai.h"
#include "lic/models.h"
#include "lic/tensor_io.h"

using namespace lic;

namespace {

const std::string kGolden = std::string(LIC_SOURCE_DIR) + "/tests/golden/";

struct Case {
  const char* folder;
  const char* arch;
};
const Case kCases[] = {{"bmshj2018-factorized", "factorized"},
                       {"bmshj2018-hyperprior", "hyperprior"},
                       {"mbt2018-mean", "mean-scale"}};

torch::Tensor golden_input() {
  auto u8 = find_tensor(load_tensor_dict(kGolden + "input.pt"), "x_u8");
  return u8.to(torch::kFloat32).div(255);
}

bool has(const TensorDict& d, const std::string& k) {
  for (auto& kv : d)
    if (kv.first == k) return true;
  return false;
}

double max_abs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

std::vector<uint8_t> bytes_of(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<uint8_t>(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel());
}

class Golden : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    torch::set_num_threads(2);
    sd = load_tensor_dict(kGolden + GetParam().folder + "/state_dict.pt");
    out = load_tensor_dict(kGolden + GetParam().folder + "/outputs.pt");
    model = model_from_compressai(sd, GetParam().arch);
    model->eval();
  }
  TensorDict sd, out;
  ModelPtr model;
};

}  // namespace

TEST_P(Golden, ForwardMatchesCompressAI) {
  torch::NoGradGuard ng;
  EXPECT_EQ(model->N(), 32);
  EXPECT_EQ(model->M(), 48);
  auto o = model->forward(golden_input());
  EXPECT_LT(max_abs(o.y, find_tensor(out, "y")), 1e-4);
  // The hyperpriors' y_hat = round(y) is integer-valued and must match exactly. The
  // mean-scale model's is round(y - means) + means: its fractional part is a network output,
  // which another CPU's convolution kernels change in the last bits (AVX-512 vs AVX2), so it
  // is compared to float precision; a symbol that rounded differently would be off by ~1.
  if (has(out, "means_hat"))
    EXPECT_LT(max_abs(o.y_hat, find_tensor(out, "y_hat")), 1e-4) << "y_hat differs";
  else
    EXPECT_TRUE(torch::equal(o.y_hat, find_tensor(out, "y_hat"))) << "y_hat differs";
  EXPECT_LT(max_abs(o.x_hat, find_tensor(out, "x_hat")), 1e-4);
  EXPECT_LT(max_abs(o.likelihoods[0].second, find_tensor(out, "likelihoods_y")), 1e-4);
  if (model->has_hyperprior()) {
    EXPECT_LT(max_abs(o.z, find_tensor(out, "z")), 1e-4);
    EXPECT_TRUE(torch::equal(o.z_hat, find_tensor(out, "z_hat"))) << "z_hat differs";
    EXPECT_LT(max_abs(o.likelihoods[1].second, find_tensor(out, "likelihoods_z")), 1e-4);
    EXPECT_LT(max_abs(o.scales_hat, find_tensor(out, "scales_hat")), 1e-4);
    if (has(out, "means_hat")) EXPECT_LT(max_abs(o.means_hat, find_tensor(out, "means_hat")), 1e-4);
  }
}

TEST_P(Golden, CdfTablesEqualCompressAI) {
  TensorDict before;
  for (auto& [k, t] : state_dict(*model)) before.emplace_back(k, t.clone());
  model->update_tables(/*force=*/true);
  int compared = 0;
  for (auto& [k, t] : state_dict(*model)) {
    if (k.find("_quantized_cdf") == std::string::npos && k.find("_cdf_length") == std::string::npos &&
        k.find("_offset") == std::string::npos)
      continue;
    auto want = find_tensor(before, k);
    ASSERT_EQ(t.sizes(), want.sizes()) << k;
    EXPECT_TRUE(torch::equal(t, want)) << k << " differs";
    ++compared;
  }
  EXPECT_EQ(compared, model->has_hyperprior() ? 6 : 3);
}

TEST_P(Golden, StreamsMatchCompressAI) {
  auto x = golden_input();
  auto streams = model->compress(x);
  auto y_ref = bytes_of(find_tensor(out, "y_string"));
  EXPECT_EQ(streams[0].size(), y_ref.size());
  EXPECT_EQ(streams[0], y_ref) << "y stream bytes differ";
  std::vector<std::vector<uint8_t>> theirs{y_ref};
  if (model->has_hyperprior()) {
    auto z_ref = bytes_of(find_tensor(out, "z_string"));
    EXPECT_EQ(streams[1], z_ref) << "z stream bytes differ";
    theirs.push_back(z_ref);
  }
  // Decoding CompressAI's own streams gives its reconstruction.
  auto x_hat = model->decompress(theirs, 256, 256);
  EXPECT_LT(max_abs(x_hat, find_tensor(out, "x_hat").clamp(0, 1)), 1e-4);
}

TEST_P(Golden, TrainingStepGradientsMatchCompressAI) {
  auto ts = load_tensor_dict(kGolden + GetParam().folder + "/train_step.pt");
  auto x = golden_input().index({torch::indexing::Slice(), torch::indexing::Slice(), torch::indexing::Slice(0, 64),
                                 torch::indexing::Slice(0, 128)})
               .contiguous();
  Noise noise;
  noise.y = find_tensor(ts, "noise_y");
  if (model->has_hyperprior()) noise.z = find_tensor(ts, "noise_z");
  model->train();
  model->zero_grad();
  auto o = model->forward(x, &noise);
  const double npix = 64.0 * 128.0;
  torch::Tensor bpp = torch::zeros({});
  for (auto& [n, l] : o.likelihoods) bpp = bpp + torch::log(l).sum() / (-std::log(2.0) * npix);
  auto mse = torch::mse_loss(o.x_hat, x);
  auto loss = 0.013 * 255 * 255 * mse + bpp;
  EXPECT_NEAR(loss.item<double>(), find_tensor(ts, "loss").item<double>(), 1e-4);
  EXPECT_NEAR(bpp.item<double>(), find_tensor(ts, "bpp_loss").item<double>(), 1e-4);
  loss.backward();
  auto named = model->named_parameters();
  auto norm_ref = find_tensor(ts, "grad_total_norm").item<double>();
  for (auto& [k0, g] : ts) {
    if (k0.rfind("grad.", 0) != 0) continue;
    auto key = normalize_compressai_keys({{k0.substr(5), g}})[0].first;
    auto* p = named.find(key);
    ASSERT_NE(p, nullptr) << key;
    ASSERT_TRUE(p->grad().defined()) << key;
    // relative to the global gradient norm: float32 summation order differs
    EXPECT_LT(max_abs(p->grad(), g) / norm_ref, 1e-4) << key;
  }
  model->zero_grad();
  auto aux = model->aux_loss();
  EXPECT_NEAR(aux.item<double>() / find_tensor(ts, "aux_loss").item<double>(), 1.0, 1e-5);
  aux.backward();
  EXPECT_LT(max_abs(model->entropy_bottleneck->quantiles.grad(),
                    find_tensor(ts, "aux_grad.entropy_bottleneck.quantiles")),
            1e-4);
}

TEST_P(Golden, CompressAIExportKeepsKeysAndValues) {
  auto legacy = to_compressai(*model, /*legacy_names=*/true);
  ASSERT_EQ(legacy.size(), sd.size());
  for (auto& [k, t] : sd) EXPECT_TRUE(torch::equal(find_tensor(legacy, k), t)) << k;
  auto current = to_compressai(*model);
  EXPECT_TRUE(has(current, "entropy_bottleneck.matrices.0"));
  EXPECT_FALSE(has(current, "entropy_bottleneck._matrix0"));
}

INSTANTIATE_TEST_SUITE_P(CompressAI, Golden, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.arch == std::string("mean-scale") ? "mean_scale" : info.param.arch); });
