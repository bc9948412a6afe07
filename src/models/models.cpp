#include "lic/models.h"

#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include "lic/error.h"

namespace lic {

namespace nn = torch::nn;
using torch::indexing::Slice;

// ---------------------------------------------------------------------------------------
// CompressionModel
// ---------------------------------------------------------------------------------------

CompressionModel::CompressionModel(std::string name, int64_t N, int64_t M) : name_(std::move(name)), N_(N), M_(M) {
  check(N > 0 && M > 0 && N <= 4096 && M <= 4096, "model sizes out of range: N=" + std::to_string(N) +
                                                      " M=" + std::to_string(M) + " (1..4096)");
}

std::vector<torch::Tensor> CompressionModel::main_parameters() {
  std::vector<torch::Tensor> out;
  for (auto& p : named_parameters())
    if (p.key().size() < 9 || p.key().compare(p.key().size() - 9, 9, "quantiles") != 0) out.push_back(p.value());
  return out;
}

std::vector<torch::Tensor> CompressionModel::aux_parameters() { return {entropy_bottleneck->quantiles}; }

uint64_t hash_tensors(const std::vector<torch::Tensor>& ts, uint64_t h) {
  for (const auto& t0 : ts) {
    auto t = t0.detach().cpu().contiguous();
    const auto* p = static_cast<const uint8_t*>(t.data_ptr());
    const size_t n = t.numel() * t.element_size();
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;  // FNV-1a
    for (auto d : t.sizes()) h = (h ^ static_cast<uint64_t>(d)) * 1099511628211ull;
  }
  return h;
}

void CompressionModel::update_tables(bool force) {
  torch::NoGradGuard ng;
  auto& eb = *entropy_bottleneck;
  std::vector<torch::Tensor> density;
  for (auto* group : {&eb.matrices, &eb.biases, &eb.factors}) density.insert(density.end(), group->begin(), group->end());
  if (!bisection_quantiles) density.push_back(eb.quantiles);
  const uint64_t k = hash_tensors(density);
  if (force || k != eb_key_ || !eb.has_tables()) {
    if (bisection_quantiles) eb.update_quantiles_bisection();
    eb.update();
    eb_key_ = k;
  }
  if (gaussian_conditional) {
    const uint64_t g = hash_tensors({gaussian_conditional->scale_table});
    if (force || g != gc_key_ || !gaussian_conditional->has_tables()) {
      gaussian_conditional->update();
      gc_key_ = g;
    }
  }
}

uint64_t CompressionModel::fingerprint() {
  update_tables();
  std::vector<torch::Tensor> all;
  for (auto& kv : state_dict(*this)) all.push_back(kv.second);
  uint64_t h = hash_tensors(all);
  for (char c : name_) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h;
}

namespace {

torch::Tensor channel_groups(const torch::Tensor& sym) {
  auto C = sym.size(1);
  return torch::arange(C, torch::kLong).reshape({1, -1, 1, 1}).expand(sym.sizes()).reshape(-1);
}

LatentSymbols bottleneck_symbols(EntropyBottleneckImpl& eb, const torch::Tensor& latent, const char* name) {
  auto sym = eb.symbols(latent);
  auto idx = eb.indexes(sym.sizes());
  return {name, sym.reshape(-1).to(torch::kLong), channel_groups(sym), eb.code_lengths(sym, idx).reshape(-1)};
}

LatentSymbols gaussian_symbols(GaussianConditionalImpl& gc, const torch::Tensor& y, const torch::Tensor& scales,
                               const torch::Tensor& means) {
  auto sym = gc.symbols(y, means);
  auto idx = gc.build_indexes(scales);
  return {"y", sym.reshape(-1).to(torch::kLong), idx.reshape(-1).to(torch::kLong),
          gc.code_lengths(sym, idx).reshape(-1)};
}

// --- bmshj2018-factorized ---------------------------------------------------------------

nn::Sequential analysis(int64_t N, int64_t M) {
  return nn::Sequential(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M));
}

nn::Sequential synthesis(int64_t N, int64_t M) {
  return nn::Sequential(deconv(M, N), GDN(N, true), deconv(N, N), GDN(N, true), deconv(N, N), GDN(N, true),
                        deconv(N, 3));
}

class FactorizedPrior : public CompressionModel {
 public:
  FactorizedPrior(int64_t N, int64_t M) : CompressionModel("factorized", N, M) {
    entropy_bottleneck = register_module("entropy_bottleneck", EntropyBottleneck(M));
    g_a = register_module("g_a", analysis(N, M));
    g_s = register_module("g_s", synthesis(N, M));
  }

  ForwardOutput forward(const torch::Tensor& x, const Noise* noise) override {
    ForwardOutput o;
    o.y = g_a->forward(x);
    torch::Tensor eb_noise;
    if (noise && noise->y.defined()) eb_noise = noise->y.permute({1, 0, 2, 3}).reshape({M(), 1, -1});
    auto [y_hat, lik] = entropy_bottleneck->forward(o.y, is_training(), eb_noise);
    o.y_hat = y_hat;
    o.likelihoods = {{"y", lik}};
    o.x_hat = g_s->forward(y_hat);
    return o;
  }

  std::vector<LatentSymbols> coded_symbols(const ForwardOutput& out) override {
    torch::NoGradGuard ng;
    return {bottleneck_symbols(*entropy_bottleneck, out.y.detach(), "y")};
  }

  std::vector<std::vector<uint8_t>> compress(const torch::Tensor& x) override {
    torch::NoGradGuard ng;
    update_tables();
    return {entropy_bottleneck->compress(g_a->forward(x))};
  }

  torch::Tensor decompress(const std::vector<std::vector<uint8_t>>& s, int64_t H, int64_t W) override {
    torch::NoGradGuard ng;
    check(s.size() == 1, "factorized model expects 1 stream, got " + std::to_string(s.size()));
    update_tables();
    auto y_hat = entropy_bottleneck->decompress(s[0], H / 16, W / 16);
    return g_s->forward(y_hat).clamp_(0, 1);
  }

  nn::Sequential g_a{nullptr}, g_s{nullptr};
};

// --- bmshj2018-hyperprior / mbt2018-mean ------------------------------------------------

class HyperpriorBase : public CompressionModel {
 public:
  HyperpriorBase(const std::string& name, int64_t N, int64_t M, int64_t scale_levels, bool mean)
      : CompressionModel(name, N, M), mean_(mean) {
    entropy_bottleneck = register_module("entropy_bottleneck", EntropyBottleneck(N));
    g_a = register_module("g_a", analysis(N, M));
    g_s = register_module("g_s", synthesis(N, M));
    if (mean) {
      h_a = register_module("h_a", nn::Sequential(conv(M, N, 3, 1), nn::LeakyReLU(), conv(N, N), nn::LeakyReLU(),
                                                  conv(N, N)));
      h_s = register_module("h_s", nn::Sequential(deconv(N, M), nn::LeakyReLU(), deconv(M, M * 3 / 2),
                                                  nn::LeakyReLU(), conv(M * 3 / 2, M * 2, 3, 1)));
    } else {
      h_a = register_module("h_a", nn::Sequential(conv(M, N, 3, 1), nn::ReLU(), conv(N, N), nn::ReLU(), conv(N, N)));
      h_s = register_module("h_s", nn::Sequential(deconv(N, N), nn::ReLU(), deconv(N, N), nn::ReLU(),
                                                  conv(N, M, 3, 1), nn::ReLU()));
    }
    gaussian_conditional = register_module("gaussian_conditional", GaussianConditional(make_scale_table(scale_levels)));
  }

  bool has_hyperprior() const override { return true; }

  // Hyper-synthesis: (scales, means); means undefined for the scale-only model.
  std::pair<torch::Tensor, torch::Tensor> params(const torch::Tensor& z_hat) {
    auto p = h_s->forward(z_hat);
    if (!mean_) return {p, torch::Tensor()};
    auto c = p.chunk(2, 1);
    return {c[0], c[1]};
  }

  ForwardOutput forward(const torch::Tensor& x, const Noise* noise) override {
    ForwardOutput o;
    o.y = g_a->forward(x);
    o.z = h_a->forward(mean_ ? o.y : torch::abs(o.y));
    torch::Tensor eb_noise, gc_noise;
    if (noise && noise->z.defined()) eb_noise = noise->z.permute({1, 0, 2, 3}).reshape({N(), 1, -1});
    if (noise) gc_noise = noise->y;
    auto [z_hat, z_lik] = entropy_bottleneck->forward(o.z, is_training(), eb_noise);
    o.z_hat = z_hat;
    std::tie(o.scales_hat, o.means_hat) = params(z_hat);
    auto [y_hat, y_lik] = gaussian_conditional->forward(o.y, o.scales_hat, o.means_hat, is_training(), gc_noise);
    o.y_hat = y_hat;
    o.likelihoods = {{"y", y_lik}, {"z", z_lik}};
    o.x_hat = g_s->forward(y_hat);
    return o;
  }

  std::vector<LatentSymbols> coded_symbols(const ForwardOutput& out) override {
    torch::NoGradGuard ng;
    auto z = out.z.detach();
    auto zs = bottleneck_symbols(*entropy_bottleneck, z, "z");
    auto z_hat = entropy_bottleneck->symbols(z).to(torch::kFloat32) +
                 entropy_bottleneck->medians().reshape({1, -1, 1, 1});
    auto [scales, means] = params(z_hat);
    return {gaussian_symbols(*gaussian_conditional, out.y.detach(), scales, means), zs};
  }

  std::vector<std::vector<uint8_t>> compress(const torch::Tensor& x) override {
    torch::NoGradGuard ng;
    update_tables();
    auto y = g_a->forward(x);
    auto z = h_a->forward(mean_ ? y : torch::abs(y));
    auto z_stream = entropy_bottleneck->compress(z);
    auto z_hat = entropy_bottleneck->decompress(z_stream, z.size(2), z.size(3));
    auto [scales, means] = params(z_hat);
    auto idx = gaussian_conditional->build_indexes(scales);
    return {gaussian_conditional->compress(y, idx, means), z_stream};
  }

  torch::Tensor decompress(const std::vector<std::vector<uint8_t>>& s, int64_t H, int64_t W) override {
    torch::NoGradGuard ng;
    check(s.size() == 2, name() + " model expects 2 streams (y, z), got " + std::to_string(s.size()));
    update_tables();
    auto z_hat = entropy_bottleneck->decompress(s[1], H / 64, W / 64);
    auto [scales, means] = params(z_hat);
    auto idx = gaussian_conditional->build_indexes(scales);
    auto y_hat = gaussian_conditional->decompress(s[0], idx, means);
    return g_s->forward(y_hat).clamp_(0, 1);
  }

  nn::Sequential g_a{nullptr}, g_s{nullptr}, h_a{nullptr}, h_s{nullptr};

 private:
  bool mean_;
};

struct Entry {
  const char* name;
  const char* compressai;
  int split_quality;  // zoo: qualities above use the large sizes
};
const Entry kModels[] = {
    {"factorized", "bmshj2018-factorized", 5},
    {"hyperprior", "bmshj2018-hyperprior", 5},
    {"mean-scale", "mbt2018-mean", 4},
};

}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> v;
  for (const auto& e : kModels) v.emplace_back(e.name);
  return v;
}

std::string canonical_model_name(const std::string& name) {
  for (const auto& e : kModels)
    if (name == e.name || name == e.compressai) return e.name;
  std::string all;
  for (const auto& e : kModels) all += std::string(all.empty() ? "" : ", ") + e.name;
  throw Error("unknown model '" + name + "' (known: " + all + ")");
}

std::string compressai_name(const std::string& name) {
  auto c = canonical_model_name(name);
  for (const auto& e : kModels)
    if (c == e.name) return e.compressai;
  return c;
}

std::pair<int64_t, int64_t> zoo_sizes(const std::string& name, int quality) {
  check(quality >= 1 && quality <= 8, "quality must be 1..8, got " + std::to_string(quality));
  auto c = canonical_model_name(name);
  for (const auto& e : kModels)
    if (c == e.name) return quality <= e.split_quality ? std::make_pair(128, 192) : std::make_pair(192, 320);
  return {128, 192};
}

ModelPtr create_model(const ModelOptions& o) {
  const auto name = canonical_model_name(o.name);
  check(o.scale_levels >= 2 && o.scale_levels <= 4096, "scale_levels must be 2..4096");
  if (name == "factorized") return std::make_shared<FactorizedPrior>(o.N, o.M);
  return std::make_shared<HyperpriorBase>(name, o.N, o.M, o.scale_levels, name == "mean-scale");
}

// ---------------------------------------------------------------------------------------
// State dicts
// ---------------------------------------------------------------------------------------

std::vector<std::pair<std::string, torch::Tensor>> state_dict(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : m.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

namespace {
bool resizable(const std::string& key) {
  for (const char* s : {"_quantized_cdf", "_cdf_length", "_offset", "scale_table"}) {
    const size_t n = std::strlen(s);
    if (key.size() >= n && key.compare(key.size() - n, n, s) == 0) return true;
  }
  return false;
}
}  // namespace

void load_state_dict(torch::nn::Module& m, const std::vector<std::pair<std::string, torch::Tensor>>& sd) {
  torch::NoGradGuard ng;
  std::map<std::string, torch::Tensor> given(sd.begin(), sd.end());
  std::vector<std::string> missing, mismatched;
  auto own = state_dict(m);
  for (auto& [key, t] : own) {
    auto it = given.find(key);
    if (it == given.end()) {
      missing.push_back(key);
      continue;
    }
    const auto& src = it->second;
    if (resizable(key)) {
      t.set_(src.detach().to(t.device(), t.scalar_type()).contiguous().clone());
    } else if (src.sizes() != t.sizes()) {
      std::ostringstream os;
      os << key << " (file " << src.sizes() << ", model " << t.sizes() << ")";
      mismatched.push_back(os.str());
    } else {
      t.copy_(src.detach().to(t.scalar_type()));
    }
    given.erase(it);
  }
  if (missing.empty() && mismatched.empty() && given.empty()) return;
  std::ostringstream os;
  os << "weights do not match the model:";
  auto list = [&os](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    os << " " << what << " (" << v.size() << "):";
    for (size_t i = 0; i < v.size() && i < 12; ++i) os << " " << v[i];
    if (v.size() > 12) os << " ...";
    os << ";";
  };
  std::vector<std::string> unexpected;
  for (auto& kv : given) unexpected.push_back(kv.first);
  list("missing", missing);
  list("unexpected", unexpected);
  list("wrong shape", mismatched);
  throw Error(os.str());
}

}  // namespace lic
