#include "lic/entropy_models.h"

#include <chrono>
#include <cmath>
#include <limits>

#include "lic/error.h"

namespace lic {

using torch::indexing::None;
using torch::indexing::Slice;

namespace {

// Standard normal quantile by Newton steps on Phi in double precision (scipy's ndtri
// agrees to the last bit for the tail masses used here).
double normal_quantile(double p) {
  double x = 0.0;
  for (int i = 0; i < 100; ++i) {
    const double cdf = 0.5 * std::erfc(-x / std::sqrt(2.0));
    const double pdf = std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
    const double step = (cdf - p) / pdf;
    x -= std::clamp(step, -1.0, 1.0);
    if (std::abs(step) < 1e-15 * std::max(1.0, std::abs(x))) break;
  }
  return x;
}

torch::Tensor int_buffer() { return torch::zeros({0}, torch::kInt32); }

}  // namespace

double CodingClock::encode_s = 0, CodingClock::decode_s = 0;
int64_t CodingClock::symbols = 0;

torch::Tensor standardized_cumulative(const torch::Tensor& x) {
  return 0.5 * torch::erfc(-std::pow(2.0, -0.5) * x);
}

// ---------------------------------------------------------------------------------------
// EntropyModel: CDF tables
// ---------------------------------------------------------------------------------------

EntropyModelImpl::EntropyModelImpl(double likelihood_bound) {
  offset = register_buffer("_offset", int_buffer());
  quantized_cdf = register_buffer("_quantized_cdf", int_buffer());
  cdf_length = register_buffer("_cdf_length", int_buffer());
  likelihood_lower_bound = register_module("likelihood_lower_bound", LowerBound(likelihood_bound));
}

ec::CdfTables EntropyModelImpl::tables() const {
  check(has_tables(), "entropy model has no CDF tables (internal error: update() not run)");
  auto q = quantized_cdf.cpu().to(torch::kInt32).contiguous();
  auto len = cdf_length.cpu().to(torch::kInt32).contiguous();
  auto off = offset.cpu().to(torch::kInt32).contiguous();
  ec::CdfTables t;
  const int64_t rows = q.size(0), cols = q.size(1);
  const int32_t* qp = q.data_ptr<int32_t>();
  for (int64_t i = 0; i < rows; ++i) t.cdfs.emplace_back(qp + i * cols, qp + (i + 1) * cols);
  t.lengths.assign(len.data_ptr<int32_t>(), len.data_ptr<int32_t>() + len.numel());
  t.offsets.assign(off.data_ptr<int32_t>(), off.data_ptr<int32_t>() + off.numel());
  return t;
}

void EntropyModelImpl::set_tables_from_pmf(const torch::Tensor& pmf, const torch::Tensor& tail_mass,
                                           const torch::Tensor& pmf_length, const torch::Tensor& new_offset) {
  auto p = pmf.to(torch::kFloat32).contiguous();
  auto tails = tail_mass.to(torch::kFloat32).reshape(-1).contiguous();
  auto lens = pmf_length.to(torch::kInt64).contiguous();
  const int64_t rows = p.size(0), max_length = p.size(1);
  auto cdf = torch::zeros({rows, max_length + 2}, torch::kInt32);
  auto* cp = cdf.data_ptr<int32_t>();
  const float* pp = p.data_ptr<float>();
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t n = lens[i].item<int64_t>();
    std::vector<float> prob(pp + i * max_length, pp + i * max_length + n);
    prob.push_back(tails[i].item<float>());
    auto q = ec::pmf_to_quantized_cdf(prob, ec::kPrecision);
    std::copy(q.begin(), q.end(), cp + i * (max_length + 2));
  }
  torch::NoGradGuard ng;
  quantized_cdf.set_(cdf);
  cdf_length.set_((lens + 2).to(torch::kInt32));
  offset.set_(new_offset.to(torch::kInt32).reshape(-1).contiguous().clone());
}

torch::Tensor EntropyModelImpl::code_lengths(const torch::Tensor& values, const torch::Tensor& indexes) const {
  torch::NoGradGuard ng;
  auto q = quantized_cdf.to(torch::kLong);
  const int64_t L = q.size(1);
  auto flat = q.reshape(-1);
  auto idx = indexes.reshape(-1).to(torch::kLong);
  auto s = values.reshape(-1).to(torch::kLong) - offset.to(torch::kLong).index_select(0, idx);
  auto maxv = cdf_length.to(torch::kLong).index_select(0, idx) - 2;
  auto below = s < 0, above = s >= maxv;
  auto sc = torch::where(below.logical_or(above), maxv, s);
  auto base = idx * L + sc;
  auto freq = flat.index_select(0, base + 1) - flat.index_select(0, base);
  auto bits = -torch::log2(freq.to(torch::kDouble) / double(1 << ec::kPrecision));
  // Escaped values: the escape symbol above, plus the bypass chunks (count, then value).
  auto raw = torch::where(below, -2 * s - 1, torch::where(above, 2 * (s - maxv), torch::zeros_like(s)));
  auto chunks = torch::zeros_like(raw);
  for (int k = 0; k < 16; ++k) chunks += (torch::bitwise_right_shift(raw, 4 * k) != 0).to(torch::kLong);
  auto bypass = 4 * (chunks + torch::div(chunks, 15, "floor") + 1);
  bits = bits + torch::where(below.logical_or(above), bypass, torch::zeros_like(bypass)).to(torch::kDouble);
  return bits.reshape(values.sizes());
}

std::vector<uint8_t> EntropyModelImpl::encode(const torch::Tensor& values, const torch::Tensor& indexes) const {
  auto v = values.reshape(-1).cpu().to(torch::kInt32).contiguous();
  auto i = indexes.reshape(-1).cpu().to(torch::kInt32).contiguous();
  std::vector<int32_t> vv(v.data_ptr<int32_t>(), v.data_ptr<int32_t>() + v.numel());
  std::vector<int32_t> ii(i.data_ptr<int32_t>(), i.data_ptr<int32_t>() + i.numel());
  auto t = tables();
  const auto t0 = std::chrono::steady_clock::now();
  auto out = ec::rans_encode(vv, ii, t);
  CodingClock::encode_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CodingClock::symbols += static_cast<int64_t>(vv.size());
  return out;
}

torch::Tensor EntropyModelImpl::decode(const std::vector<uint8_t>& stream, const torch::Tensor& indexes) const {
  auto i = indexes.reshape(-1).cpu().to(torch::kInt32).contiguous();
  std::vector<int32_t> ii(i.data_ptr<int32_t>(), i.data_ptr<int32_t>() + i.numel());
  auto t = tables();
  const auto t0 = std::chrono::steady_clock::now();
  auto out = ec::rans_decode(stream.data(), stream.size(), ii, t);
  CodingClock::decode_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return torch::tensor(out, torch::kInt32).reshape(indexes.sizes()).to(indexes.device());
}

// ---------------------------------------------------------------------------------------
// EntropyBottleneck
// ---------------------------------------------------------------------------------------

EntropyBottleneckImpl::EntropyBottleneckImpl(int64_t c, std::vector<int64_t> f, double init_scale_,
                                             double tail_mass_)
    : channels(c), filters(std::move(f)), init_scale(init_scale_), tail_mass(tail_mass_) {
  check(channels > 0, "EntropyBottleneck needs at least one channel");
  std::vector<int64_t> widths{1};
  widths.insert(widths.end(), filters.begin(), filters.end());
  widths.push_back(1);
  const double scale = std::pow(init_scale, 1.0 / double(filters.size() + 1));
  auto mats = register_module("matrices", std::make_shared<torch::nn::Module>());
  auto bias = register_module("biases", std::make_shared<torch::nn::Module>());
  auto facs = register_module("factors", std::make_shared<torch::nn::Module>());
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    const double init = std::log(std::expm1(1.0 / scale / double(widths[i + 1])));
    const auto k = std::to_string(i);
    matrices.push_back(mats->register_parameter(k, torch::full({channels, widths[i + 1], widths[i]}, init)));
    biases.push_back(bias->register_parameter(k, torch::rand({channels, widths[i + 1], 1}) - 0.5));
    if (i < filters.size()) factors.push_back(facs->register_parameter(k, torch::zeros({channels, widths[i + 1], 1})));
  }
  quantiles = register_parameter(
      "quantiles", torch::tensor({-init_scale, 0.0, init_scale}, torch::kFloat32).repeat({channels, 1, 1}));
  const double t = std::log(2.0 / tail_mass - 1.0);
  target = register_buffer("target", torch::tensor({-t, 0.0, t}, torch::kFloat32));
}

torch::Tensor EntropyBottleneckImpl::logits_cumulative(const torch::Tensor& inputs, bool stop_gradient) {
  auto logits = inputs;
  for (size_t i = 0; i < matrices.size(); ++i) {
    auto m = stop_gradient ? matrices[i].detach() : matrices[i];
    auto b = stop_gradient ? biases[i].detach() : biases[i];
    logits = torch::matmul(torch::softplus(m), logits) + b;
    if (i < factors.size()) {
      auto f = stop_gradient ? factors[i].detach() : factors[i];
      logits = logits + torch::tanh(f) * torch::tanh(logits);
    }
  }
  return logits;
}

torch::Tensor EntropyBottleneckImpl::likelihood(const torch::Tensor& values) {
  auto lower = logits_cumulative(values - 0.5, false);
  auto upper = logits_cumulative(values + 0.5, false);
  // Evaluate in the tail where sigmoid is not saturated (the sign trick).
  auto sign = -torch::sign(lower + upper).detach();
  return torch::abs(torch::sigmoid(sign * upper) - torch::sigmoid(sign * lower));
}

torch::Tensor EntropyBottleneckImpl::medians() const { return quantiles.index({Slice(), 0, 1}); }

std::pair<torch::Tensor, torch::Tensor> EntropyBottleneckImpl::forward(const torch::Tensor& x, bool training,
                                                                       const torch::Tensor& noise) {
  check(x.dim() == 4 && x.size(1) == channels, "EntropyBottleneck: expected (B, C, H, W) with C = " +
                                                   std::to_string(channels));
  auto xp = x.permute({1, 0, 2, 3}).contiguous();
  const auto shape = xp.sizes().vec();
  auto values = xp.reshape({channels, 1, -1});
  torch::Tensor out;
  if (training) {
    out = values + (noise.defined() ? noise : torch::rand_like(values) - 0.5);
  } else {
    auto med = quantiles.index({Slice(), Slice(), Slice(1, 2)}).detach();
    out = torch::round(values - med) + med;
  }
  auto lik = likelihood_lower_bound(likelihood(out));
  out = out.reshape(shape).permute({1, 0, 2, 3}).contiguous();
  lik = lik.reshape(shape).permute({1, 0, 2, 3}).contiguous();
  return {out, lik};
}

torch::Tensor EntropyBottleneckImpl::aux_loss() {
  auto logits = logits_cumulative(quantiles, true);
  return torch::abs(logits - target).sum();
}

void EntropyBottleneckImpl::update_quantiles_bisection() {
  torch::NoGradGuard ng;
  auto tgt = target.reshape({1, 1, 3}).expand({channels, 1, 3}).contiguous();
  // Bracket: widen until F(lo) < target < F(hi) everywhere (F is monotone increasing).
  auto lo = torch::full_like(tgt, -1.0), hi = torch::full_like(tgt, 1.0);
  for (int i = 0; i < 60; ++i) {
    auto bad_lo = logits_cumulative(lo, true) > tgt;
    auto bad_hi = logits_cumulative(hi, true) < tgt;
    if (!bad_lo.any().item<bool>() && !bad_hi.any().item<bool>()) break;
    lo = torch::where(bad_lo, lo * 2, lo);
    hi = torch::where(bad_hi, hi * 2, hi);
  }
  for (int i = 0; i < 50; ++i) {
    auto mid = 0.5 * (lo + hi);
    auto below = logits_cumulative(mid, true) < tgt;
    lo = torch::where(below, mid, lo);
    hi = torch::where(below, hi, mid);
  }
  auto q = 0.5 * (lo + hi);
  check(torch::isfinite(q).all().item<bool>(), "EntropyBottleneck: quantile bisection diverged");
  quantiles.copy_(q);
}

void EntropyBottleneckImpl::update() {
  torch::NoGradGuard ng;
  auto med = quantiles.index({Slice(), 0, 1});
  auto minima = torch::ceil(med - quantiles.index({Slice(), 0, 0})).to(torch::kInt32).clamp_min(0);
  auto maxima = torch::ceil(quantiles.index({Slice(), 0, 2}) - med).to(torch::kInt32).clamp_min(0);
  auto pmf_start = med - minima;
  auto pmf_length = maxima + minima + 1;
  const int64_t max_length = pmf_length.max().item<int64_t>();
  check(max_length < (1 << 16), "EntropyBottleneck: quantiles too far apart to build a CDF table");
  auto samples = torch::arange(max_length).index({None, Slice()}) + pmf_start.index({Slice(), None, None});
  auto lower = logits_cumulative(samples - 0.5, true);
  auto upper = logits_cumulative(samples + 0.5, true);
  auto sign = -torch::sign(lower + upper);
  auto pmf = torch::abs(torch::sigmoid(sign * upper) - torch::sigmoid(sign * lower)).index({Slice(), 0, Slice()});
  auto tails = torch::sigmoid(lower.index({Slice(), 0, Slice(0, 1)})) +
               torch::sigmoid(-upper.index({Slice(), 0, Slice(-1, None)}));
  set_tables_from_pmf(pmf, tails, pmf_length, -minima);
}

torch::Tensor EntropyBottleneckImpl::symbols(const torch::Tensor& x) const {
  auto med = medians().detach().reshape({1, -1, 1, 1});
  return torch::round(x - med).to(torch::kInt32);
}

torch::Tensor EntropyBottleneckImpl::indexes(at::IntArrayRef shape) const {
  auto idx = torch::arange(shape[1], torch::kInt32).reshape({1, -1, 1, 1});
  return idx.expand(shape).contiguous();
}

std::vector<uint8_t> EntropyBottleneckImpl::compress(const torch::Tensor& x) const {
  check(x.dim() == 4 && x.size(0) == 1 && x.size(1) == channels, "EntropyBottleneck::compress: bad shape");
  return encode(symbols(x), indexes(x.sizes()));
}

torch::Tensor EntropyBottleneckImpl::decompress(const std::vector<uint8_t>& stream, int64_t height,
                                                int64_t width) const {
  auto idx = indexes({1, channels, height, width});
  auto sym = decode(stream, idx);
  return sym.to(torch::kFloat32) + medians().detach().reshape({1, -1, 1, 1});
}

// ---------------------------------------------------------------------------------------
// GaussianConditional
// ---------------------------------------------------------------------------------------

torch::Tensor make_scale_table(int64_t levels, double min, double max) {
  return torch::exp(torch::linspace(std::log(min), std::log(max), levels));
}

GaussianConditionalImpl::GaussianConditionalImpl(const torch::Tensor& table, double bound, double tail_mass_)
    : tail_mass(tail_mass_) {
  check(table.dim() == 1 && table.numel() >= 2, "GaussianConditional: scale table needs >= 2 entries");
  scale_table = register_buffer("scale_table", table.to(torch::kFloat32).clone());
  scale_bound = register_buffer("scale_bound", torch::tensor({static_cast<float>(bound)}));
  lower_bound_scale = register_module("lower_bound_scale", LowerBound(bound));
}

torch::Tensor GaussianConditionalImpl::likelihood(const torch::Tensor& values, const torch::Tensor& scales,
                                                  const torch::Tensor& means) {
  auto v = torch::abs(means.defined() ? values - means : values);
  auto s = lower_bound_scale(scales);
  return standardized_cumulative((0.5 - v) / s) - standardized_cumulative((-0.5 - v) / s);
}

std::pair<torch::Tensor, torch::Tensor> GaussianConditionalImpl::forward(const torch::Tensor& y,
                                                                         const torch::Tensor& scales,
                                                                         const torch::Tensor& means,
                                                                         bool training, const torch::Tensor& noise) {
  torch::Tensor out;
  if (training) {
    out = y + (noise.defined() ? noise : torch::rand_like(y) - 0.5);
  } else {
    out = means.defined() ? torch::round(y - means) + means : torch::round(y);
  }
  return {out, likelihood_lower_bound(likelihood(out, scales, means))};
}

torch::Tensor GaussianConditionalImpl::build_indexes(const torch::Tensor& scales) const {
  torch::NoGradGuard ng;
  auto s = torch::max(scales, scale_bound).contiguous();
  auto idx = torch::searchsorted(scale_table.contiguous(), s, /*out_int32=*/true, /*right=*/false);
  return idx.clamp_max(scale_table.numel() - 1);
}

void GaussianConditionalImpl::update() {
  torch::NoGradGuard ng;
  const double multiplier = -normal_quantile(tail_mass / 2);
  auto pmf_center = torch::ceil(scale_table * multiplier).to(torch::kInt32);
  auto pmf_length = 2 * pmf_center + 1;
  const int64_t max_length = pmf_length.max().item<int64_t>();
  check(max_length < (1 << 16), "GaussianConditional: scale table too wide for a CDF table");
  auto samples = torch::abs(torch::arange(max_length).to(torch::kInt32) - pmf_center.index({Slice(), None}))
                     .to(torch::kFloat32);
  auto sc = scale_table.unsqueeze(1).to(torch::kFloat32);
  auto upper = standardized_cumulative((0.5 - samples) / sc);
  auto lower = standardized_cumulative((-0.5 - samples) / sc);
  auto pmf = upper - lower;
  auto tails = 2 * lower.index({Slice(), Slice(0, 1)});
  set_tables_from_pmf(pmf, tails, pmf_length, -pmf_center);
}

torch::Tensor GaussianConditionalImpl::symbols(const torch::Tensor& y, const torch::Tensor& means) const {
  return torch::round(means.defined() ? y - means : y).to(torch::kInt32);
}

std::vector<uint8_t> GaussianConditionalImpl::compress(const torch::Tensor& y, const torch::Tensor& indexes,
                                                       const torch::Tensor& means) const {
  return encode(symbols(y, means), indexes);
}

torch::Tensor GaussianConditionalImpl::decompress(const std::vector<uint8_t>& stream, const torch::Tensor& indexes,
                                                  const torch::Tensor& means) const {
  auto v = decode(stream, indexes).to(torch::kFloat32);
  return means.defined() ? v + means : v;
}

}  // namespace lic
