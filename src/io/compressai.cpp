#include "lic/compressai.h"

#include <algorithm>
#include <regex>

#include "lic/error.h"

namespace lic {

TensorDict normalize_compressai_keys(const TensorDict& d) {
  static const std::regex legacy(R"(^(.*entropy_bottleneck)\._(matrix|bias|factor)(\d+)$)");
  // A training checkpoint ({"state_dict": ..., "loss": ..., ...}) holds other tensors next to
  // the weights (CompressAI's train.py saves the loss as a 0-d tensor): when the weights are
  // wrapped, only the wrapped keys are weights.
  const auto wrapped = [](const std::string& k) { return k.rfind("state_dict.", 0) == 0 || k.rfind("model.", 0) == 0; };
  const bool any_wrapped = std::any_of(d.begin(), d.end(), [&](const auto& kv) { return wrapped(kv.first); });
  TensorDict out;
  for (const auto& [key0, t] : d) {
    if (any_wrapped && !wrapped(key0)) continue;
    std::string key = key0;
    for (const char* wrap : {"state_dict.", "model.", "module."})
      if (key.rfind(wrap, 0) == 0) key = key.substr(std::string(wrap).size());
    std::smatch m;
    if (std::regex_match(key, m, legacy)) {
      const std::string kind = m[2] == "matrix" ? "matrices" : (m[2] == "bias" ? "biases" : "factors");
      key = m[1].str() + "." + kind + "." + m[3].str();
    }
    out.emplace_back(key, t);
  }
  return out;
}

TensorDict to_compressai(CompressionModel& model, bool legacy_names) {
  model.update_tables();
  static const std::regex current(R"(^entropy_bottleneck\.(matrices|biases|factors)\.(\d+)$)");
  TensorDict out;
  for (auto& [key, t] : state_dict(model)) {
    std::string k = key;
    std::smatch m;
    if (legacy_names && std::regex_match(key, m, current)) {
      const std::string kind = m[1] == "matrices" ? "_matrix" : (m[1] == "biases" ? "_bias" : "_factor");
      k = "entropy_bottleneck." + kind + m[2].str();
    }
    out.emplace_back(k, t.detach().cpu().clone());
  }
  return out;
}

std::pair<int64_t, int64_t> infer_sizes(const TensorDict& d) {
  torch::Tensor first, last;
  for (const auto& [k, t] : d) {
    if (k == "g_a.0.weight") first = t;
    if (k == "g_a.6.weight") last = t;
  }
  check(first.defined() && last.defined() && first.dim() == 4 && last.dim() == 4,
        "cannot infer N and M: g_a.0.weight / g_a.6.weight missing (is this a CompressAI state dict?)");
  return {first.size(0), last.size(0)};
}

ModelPtr model_from_compressai(const TensorDict& d0, const std::string& arch, int64_t N, int64_t M) {
  auto d = normalize_compressai_keys(d0);
  if (N <= 0 || M <= 0) {
    auto [n, m] = infer_sizes(d);
    if (N <= 0) N = n;
    if (M <= 0) M = m;
  }
  ModelOptions o;
  o.name = arch;
  o.N = N;
  o.M = M;
  auto model = create_model(o);
  load_state_dict(*model, d);
  return model;
}

}  // namespace lic
