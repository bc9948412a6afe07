// libFuzzer target over the whole .lic decode path, as `lic decompress` runs it:
//
//   1. parse() of the raw input (magic, version, header fields, sizes against DecodeLimits,
//      stream lengths, CRC32);
//   2. the same input with its last four bytes replaced by the CRC of the rest, so mutated
//      headers and streams get past the checksum and reach the model check, the rANS decoder
//      and the synthesis transform (decode_image) of a small real model;
//   3. the raw input as a bare rANS stream decoded with the model's real CDF tables (the
//      entropy bottleneck's and the Gaussian conditional's), which reaches the coder's
//      symbol search, escape / bypass handling and end-of-stream checks directly.
//
// Anything but lic::Error escaping (c10::Error, std::bad_alloc, ...), a sanitizer report,
// or a decoded image of the wrong shape / outside [0, 1] is a finding.
//
// The models: factorized, hyperprior and mean-scale with N=8, M=12 and fixed seeds, tables
// built with update_tables(). The header names the model, so each file goes to its model.
//
// Seed corpus: LIC_FUZZ_WRITE_CORPUS=DIR ./lic_fuzz_decode writes a handful of small .lic
// files encoded with exactly these models to DIR and exits (scripts/fuzz.sh does this on
// every run, so the seeds match the current models; tests/fuzz/corpus holds a committed
// copy).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "lic/bitstream.h"
#include "lic/codec.h"
#include "lic/entropy_coding.h"
#include "lic/error.h"
#include "lic/models.h"

namespace {

constexpr int64_t kN = 8, kM = 12, kScaleLevels = 64;
constexpr uint64_t kSeed = 20240607;
// Decode limits of the target: small images keep one execution at a few milliseconds.
constexpr uint64_t kMaxPixels = 128 * 128;
constexpr uint64_t kMaxStreamBytes = 1 << 16;

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "FUZZ FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

struct TinyModels {
  std::vector<lic::ModelPtr> models;  // factorized, hyperprior, mean-scale

  TinyModels() {
    const char* names[] = {"factorized", "hyperprior", "mean-scale"};
    for (int i = 0; i < 3; ++i) {
      torch::manual_seed(kSeed + i);
      lic::ModelOptions o;
      o.name = names[i];
      o.N = kN;
      o.M = kM;
      o.scale_levels = kScaleLevels;
      auto m = lic::create_model(o);
      m->eval();
      m->update_tables(true);
      models.push_back(m);
    }
  }

  lic::CompressionModel& for_header(const lic::LicHeader& h) {
    for (auto& m : models)
      if (m->name() == h.model) return *m;
    return *models[1];  // unknown name: decode_image must refuse it
  }
};

TinyModels& tiny_models() {
  static TinyModels t;
  return t;
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

void decode_one(const uint8_t* data, size_t size) {
  lic::DecodeLimits limits;
  limits.max_pixels = kMaxPixels;
  limits.max_stream_bytes = kMaxStreamBytes;
  lic::LicFile f;
  try {
    f = lic::parse(data, size, limits);
  } catch (const lic::Error&) {
    return;
  }
  // parse() promises: sizes within limits, 1..4 streams that fit in the input.
  const auto& h = f.header;
  if (h.height == 0 || h.width == 0 || uint64_t{h.height} * h.width > kMaxPixels)
    finding("parse accepted an image size outside the limits");
  size_t total = 0;
  for (const auto& s : f.streams) total += s.size();
  if (f.streams.empty() || f.streams.size() > 4 || total > size) finding("parse returned impossible streams");
  if (!(h.channels == 1 || h.channels == 3 || h.channels == 4)) finding("parse accepted a bad channel count");

  // The decoder works at the padded size: parse() bounds that too (one 64 x 64 block allowed).
  const int64_t padded = round_up(h.height, lic::kCodecPadMultiple) * round_up(h.width, lic::kCodecPadMultiple);
  if (padded > std::max<int64_t>(kMaxPixels, 64 * 64)) finding("parse accepted a padded size outside the limits");
  torch::Tensor x;
  try {
    x = lic::decode_image(tiny_models().for_header(h), f);
  } catch (const lic::Error&) {
    return;
  }
  if (!x.defined() || x.dim() != 4 || x.size(0) != 1 || x.size(1) != 3 || x.size(2) != h.height ||
      x.size(3) != h.width)
    finding("decode_image returned a tensor of the wrong shape");
  if (x.scalar_type() != torch::kFloat32) finding("decode_image returned a non-float tensor");
  // Not finite or outside [0, 1]: garbage would reach the image writer.
  if (!torch::isfinite(x).all().item<bool>()) finding("decode_image returned NaN/Inf pixels");
  if (x.numel() > 0 && (x.min().item<float>() < 0.f || x.max().item<float>() > 1.f))
    finding("decode_image returned pixels outside [0, 1]");
}

// The raw bytes as a rANS stream under real tables. Byte 0 picks the table set and the
// index pattern, bytes 1-2 the symbol count; the rest is the stream.
void rans_one(const uint8_t* data, size_t size) {
  if (size < 3) return;
  auto& hp = *tiny_models().models[1];
  const bool gaussian = data[0] & 1;
  const auto tables = gaussian ? hp.gaussian_conditional->tables() : hp.entropy_bottleneck->tables();
  const size_t count = 1 + ((size_t{data[1]} | (size_t{data[2]} << 8)) & 0x0FFF);  // 1..4096
  std::vector<int32_t> indexes(count);
  const uint32_t stride = 1 + (data[0] >> 1);
  for (size_t i = 0; i < count; ++i) indexes[i] = static_cast<int32_t>((i * stride) % tables.size());
  // A heap copy of exactly the stream bytes, so ASan sees any read past its end.
  std::vector<uint8_t> stream(data + 3, data + size);
  try {
    auto out = lic::ec::rans_decode(stream.data(), stream.size(), indexes, tables);
    if (out.size() != count) finding("rans_decode returned the wrong number of symbols");
    // Whatever decodes must re-encode to a stream that decodes to the same values. (Not
    // necessarily to the same bytes: an escape may be written with leading zero chunks.)
    const auto again = lic::ec::rans_encode(out, indexes, tables);
    if (lic::ec::rans_decode(again.data(), again.size(), indexes, tables) != out)
      finding("rans_decode -> rans_encode -> rans_decode changed the values");
  } catch (const lic::Error&) {
  }
}

// --- seed corpus --------------------------------------------------------------------------

torch::Tensor seed_image(int64_t h, int64_t w, int k) {
  auto yy = torch::linspace(0, 1, h).reshape({1, 1, h, 1});
  auto xx = torch::linspace(0, 1, w).reshape({1, 1, 1, w});
  auto r = (xx * 0.8 + 0.1).expand({1, 1, h, w});
  auto g = (yy * 0.7 + 0.2).expand({1, 1, h, w});
  auto b = 0.5 + 0.4 * torch::sin(6.0 * xx + 4.0 * yy + k);
  return torch::cat({r, g, b.expand({1, 1, h, w})}, 1).clamp(0, 1).contiguous();
}

void write_corpus(const std::string& dir) {
  std::filesystem::create_directories(dir);
  struct Seed {
    int model;
    int64_t h, w;
    uint8_t channels;
  };
  const Seed seeds[] = {{0, 64, 64, 3}, {0, 37, 50, 1},  {1, 64, 64, 3},  {1, 37, 50, 1},
                        {1, 128, 64, 4}, {1, 20, 130, 3}, {2, 64, 64, 3}, {2, 70, 33, 4}};
  int k = 0;
  for (const auto& s : seeds) {
    auto& m = *tiny_models().models[s.model];
    const auto f = lic::encode_image(m, seed_image(s.h, s.w, k++), s.channels);
    const auto bytes = lic::serialize(f);
    const std::string path = dir + "/" + m.name() + "_" + std::to_string(s.h) + "x" + std::to_string(s.w) + "_c" +
                             std::to_string(s.channels) + ".lic";
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    // The seed must decode, or the fuzzer would start from rejected inputs only.
    try {
      lic::decode_image(m, lic::parse(bytes));
    } catch (const lic::Error& e) {
      finding(path + " does not decode: " + e.what());
    }
    decode_one(bytes.data(), bytes.size());
    std::printf("%s: %zu bytes\n", path.c_str(), bytes.size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  tiny_models();
  if (const char* dir = std::getenv("LIC_FUZZ_WRITE_CORPUS")) {
    write_corpus(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  decode_one(data, size);
  if (size > 8 && size <= kMaxStreamBytes) {
    std::vector<uint8_t> fixed(data, data + size);
    const uint32_t crc = lic::crc32(fixed.data(), size - 4);
    for (int i = 0; i < 4; ++i) fixed[size - 4 + i] = static_cast<uint8_t>(crc >> (8 * i));
    decode_one(fixed.data(), fixed.size());
  }
  rans_one(data, size);
  return 0;
}
