#include "lic/rate_stats.h"

#include <cmath>

namespace lic {

void RateAccumulator::add(const std::vector<LatentSymbols>& latents, double pixels) {
  torch::NoGradGuard ng;
  for (const auto& l : latents) {
    auto keys = (l.groups.to(torch::kLong) * (int64_t(1) << 32)) +
                torch::bitwise_and(l.symbols.to(torch::kLong), int64_t(0xffffffff));
    auto [vals, inv, cnt] = torch::_unique2(keys.cpu(), /*sorted=*/false, /*return_inverse=*/false,
                                            /*return_counts=*/true);
    auto v = vals.contiguous(), c = cnt.contiguous();
    auto& h = hist_[l.name];
    const int64_t* vp = v.data_ptr<int64_t>();
    const int64_t* cp = c.data_ptr<int64_t>();
    for (int64_t i = 0; i < v.numel(); ++i) h.counts[vp[i]] += cp[i];
    h.ce_bits += l.bits.sum().item<double>();
  }
  pixels_ += pixels;
}

void RateAccumulator::merge_counts(const std::string& latent, const std::vector<int64_t>& keys,
                                   const std::vector<int64_t>& counts, double ce_bits) {
  auto& h = hist_[latent];
  for (size_t i = 0; i < keys.size(); ++i) h.counts[keys[i]] += counts[i];
  h.ce_bits += ce_bits;
}

void RateAccumulator::reset() {
  hist_.clear();
  pixels_ = 0;
}

double plugin_entropy_bits(const std::unordered_map<int64_t, int64_t>& counts) {
  std::unordered_map<int64_t, int64_t> group_total;
  for (const auto& [k, c] : counts) group_total[k >> 32] += c;
  double bits = 0;
  for (const auto& [k, c] : counts) {
    const double n = static_cast<double>(group_total[k >> 32]);
    bits -= static_cast<double>(c) * std::log2(static_cast<double>(c) / n);
  }
  return bits;
}

std::map<std::string, LatentRate> RateAccumulator::per_latent() const {
  std::map<std::string, LatentRate> out;
  for (const auto& [name, h] : hist_) {
    LatentRate r;
    r.ce_bits = h.ce_bits;
    r.entropy_bits = plugin_entropy_bits(h.counts);
    for (const auto& kv : h.counts) r.symbols += static_cast<double>(kv.second);
    out[name] = r;
  }
  return out;
}

double RateAccumulator::ce_bpp(const std::string& latent) const {
  if (pixels_ <= 0) return 0;
  double bits = 0;
  for (const auto& [name, h] : hist_)
    if (latent.empty() || latent == name) bits += h.ce_bits;
  return bits / pixels_;
}

double RateAccumulator::entropy_bpp(const std::string& latent) const {
  if (pixels_ <= 0) return 0;
  double bits = 0;
  for (const auto& [name, h] : hist_)
    if (latent.empty() || latent == name) bits += plugin_entropy_bits(h.counts);
  return bits / pixels_;
}

std::map<std::string, RateAccumulator::Raw> RateAccumulator::raw() const {
  std::map<std::string, Raw> out;
  for (const auto& [name, h] : hist_) {
    auto& r = out[name];
    r.ce_bits = h.ce_bits;
    for (const auto& [k, c] : h.counts) {
      r.keys.push_back(k);
      r.counts.push_back(c);
    }
  }
  return out;
}

}  // namespace lic
