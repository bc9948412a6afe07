#include "lic/codec.h"

#include <cinttypes>
#include <cstdio>
#include <limits>

#include "lic/error.h"

namespace lic {

namespace F = torch::nn::functional;
using torch::indexing::Slice;

namespace {

// Puts the model in eval mode for the scope and restores its previous mode.
class EvalScope {
 public:
  explicit EvalScope(CompressionModel& m) : m_(m), was_training_(m.is_training()) {
    if (was_training_) m_.eval();
  }
  ~EvalScope() {
    if (was_training_) m_.train();
  }
  EvalScope(const EvalScope&) = delete;
  EvalScope& operator=(const EvalScope&) = delete;

 private:
  CompressionModel& m_;
  bool was_training_;
};

torch::Device model_device(CompressionModel& m) {
  for (const auto& p : m.parameters()) return p.device();
  return torch::kCPU;
}

void check_image_tensor(const torch::Tensor& x) {
  check(x.defined() && x.dim() == 4 && x.size(0) == 1 && x.size(1) == 3,
        "codec: expected an image tensor of shape (1, 3, H, W)");
  check(x.size(2) > 0 && x.size(3) > 0, "codec: empty image");
  check(x.size(2) <= std::numeric_limits<uint32_t>::max() && x.size(3) <= std::numeric_limits<uint32_t>::max(),
        "codec: image too large");
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

std::string describe(const std::string& name, uint64_t N, uint64_t M, uint64_t fp) {
  return "'" + name + "' N=" + std::to_string(N) + " M=" + std::to_string(M) + " (fingerprint " +
         fingerprint_hex(fp) + ")";
}

bool same_model_name(const std::string& file_name, const std::string& model_name) {
  if (file_name == model_name) return true;
  try {
    return canonical_model_name(file_name) == canonical_model_name(model_name);
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

std::string fingerprint_hex(uint64_t fp) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, fp);
  return buf;
}

torch::Tensor pad_for_codec(const torch::Tensor& x, int64_t multiple) {
  check_image_tensor(x);
  const int64_t H = x.size(2), W = x.size(3);
  const int64_t ph = round_up(H, multiple) - H, pw = round_up(W, multiple) - W;
  if (ph == 0 && pw == 0) return x;
  return F::pad(x, F::PadFuncOptions({0, pw, 0, ph}).mode(torch::kReplicate));
}

torch::Tensor crop_to(const torch::Tensor& x, int64_t h, int64_t w) {
  return x.index({"...", Slice(0, h), Slice(0, w)}).contiguous();
}

ForwardOutput forward_eval(CompressionModel& m, const torch::Tensor& x_padded) {
  torch::NoGradGuard ng;
  EvalScope scope(m);
  return m.forward(x_padded.to(model_device(m), torch::kFloat32));
}

torch::Tensor reconstruct(CompressionModel& m, const torch::Tensor& x) {
  torch::NoGradGuard ng;
  check_image_tensor(x);
  auto out = forward_eval(m, pad_for_codec(x));
  return crop_to(out.x_hat.clamp(0, 1), x.size(2), x.size(3));
}

LicFile encode_image(CompressionModel& m, const torch::Tensor& x, uint8_t channels) {
  torch::NoGradGuard ng;
  EvalScope scope(m);
  check_image_tensor(x);
  check(channels == 1 || channels == 3 || channels == 4, "codec: channels must be 1, 3 or 4");
  m.update_tables();
  auto xp = pad_for_codec(x.to(model_device(m), torch::kFloat32));
  LicFile f;
  f.header.model = m.name();
  f.header.N = static_cast<uint32_t>(m.N());
  f.header.M = static_cast<uint32_t>(m.M());
  f.header.fingerprint = m.fingerprint();
  f.header.height = static_cast<uint32_t>(x.size(2));
  f.header.width = static_cast<uint32_t>(x.size(3));
  f.header.channels = channels;
  f.streams = m.compress(xp);
  return f;
}

LicFile encode_image(CompressionModel& m, const Image& img, const ModelMeta& meta) {
  if (!meta.name.empty())
    check(same_model_name(meta.name, m.name()) && (meta.N == 0 || meta.N == m.N()) && (meta.M == 0 || meta.M == m.M()),
          "model metadata (" + meta.name + " N=" + std::to_string(meta.N) + " M=" + std::to_string(meta.M) +
              ") does not describe this model (" + m.name() + " N=" + std::to_string(m.N()) +
              " M=" + std::to_string(m.M()) + ")");
  uint8_t channels = 3;
  if (img.orig_channels == 1 || img.orig_channels == 2) channels = 1;  // gray (+ alpha, dropped)
  if (img.orig_channels == 4) channels = 4;
  return encode_image(m, img.x, channels);
}

void check_model_matches(CompressionModel& m, const LicHeader& h) {
  const uint64_t fp = m.fingerprint();
  const bool same = same_model_name(h.model, m.name()) && h.N == static_cast<uint64_t>(m.N()) &&
                    h.M == static_cast<uint64_t>(m.M()) && h.fingerprint == fp;
  if (same) return;
  throw Error("file was encoded with model " + describe(h.model, h.N, h.M, h.fingerprint) + ", this model is " +
              describe(m.name(), m.N(), m.M(), fp) + ": decode with the same model");
}

torch::Tensor decode_image(CompressionModel& m, const LicFile& f) {
  torch::NoGradGuard ng;
  EvalScope scope(m);
  check_model_matches(m, f.header);
  const int64_t H = f.header.height, W = f.header.width;
  check(H > 0 && W > 0, "corrupt .lic header: empty image");
  const int64_t Hp = round_up(H, kCodecPadMultiple), Wp = round_up(W, kCodecPadMultiple);
  torch::Tensor x_hat;
  try {
    x_hat = m.decompress(f.streams, Hp, Wp);
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Error(std::string("cannot decode .lic streams: ") + e.what_without_backtrace());
  }
  // Symbols no encoder writes (a crafted file: valid CRC and fingerprint, huge escapes) can
  // drive the synthesis to Inf/NaN, which clamp() keeps: refuse rather than output garbage.
  check(torch::isfinite(x_hat).all().item<bool>(), "corrupt .lic streams: the decoded image is not finite");
  return crop_to(x_hat.clamp(0, 1), H, W);
}

}  // namespace lic
