// Rate accounting (REFERENCE.md §1): cross-entropy of the coded symbols under the coder's
// quantized CDFs (what the file will cost), their empirical plug-in entropy in the same
// groups (channel for the bottleneck, scale-table index for the Gaussian conditional), and
// kl = ce - entropy, the bits lost to prior mismatch. With identical groups the plug-in
// entropy is the least cross-entropy any distribution reaches on the sample, so kl >= 0.
#pragma once
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "lic/models.h"

namespace lic {

struct LatentRate {
  double ce_bits = 0, entropy_bits = 0;
  double symbols = 0;
};

class RateAccumulator {
 public:
  void add(const std::vector<LatentSymbols>& latents, double pixels);
  void merge_counts(const std::string& latent, const std::vector<int64_t>& keys, const std::vector<int64_t>& counts,
                    double ce_bits);
  void reset();

  double pixels() const { return pixels_; }
  // Per latent ("y", "z") and total, in bits per pixel.
  std::map<std::string, LatentRate> per_latent() const;
  double ce_bpp(const std::string& latent = "") const;
  double entropy_bpp(const std::string& latent = "") const;
  double kl_bpp(const std::string& latent = "") const { return ce_bpp(latent) - entropy_bpp(latent); }

  // Serialised histograms (for reduction across ranks): latent -> (keys, counts, ce bits).
  struct Raw {
    std::vector<int64_t> keys, counts;
    double ce_bits = 0;
  };
  std::map<std::string, Raw> raw() const;
  void add_pixels(double p) { pixels_ += p; }

 private:
  struct Hist {
    std::unordered_map<int64_t, int64_t> counts;  // key = (group << 32) | (uint32)symbol
    double ce_bits = 0;
  };
  std::map<std::string, Hist> hist_;
  double pixels_ = 0;
};

// Plug-in entropy in bits of a histogram keyed as above (grouped by key >> 32).
double plugin_entropy_bits(const std::unordered_map<int64_t, int64_t>& counts);

}  // namespace lic
