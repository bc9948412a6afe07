// The image codec: encode -> serialize -> parse -> decode, against reconstruct().
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>

#include "lic/bitstream.h"
#include "lic/checkpoint.h"
#include "lic/codec.h"
#include "lic/error.h"
#include "lic/evaluate.h"
#include "lic/image.h"
#include "lic/models.h"

namespace fs = std::filesystem;

namespace {

lic::ModelPtr tiny_model(const std::string& name, uint64_t seed = 1) {
  torch::manual_seed(seed);
  lic::ModelOptions o;
  o.name = name;
  o.N = 8;
  o.M = 12;
  auto m = lic::create_model(o);
  m->eval();
  m->update_tables();
  return m;
}

// Random 8-bit-exact image with some structure (a gradient plus noise).
torch::Tensor test_image(int64_t h, int64_t w, uint64_t seed = 7) {
  torch::manual_seed(seed);
  auto yy = torch::linspace(0, 1, h).view({1, 1, h, 1});
  auto xx = torch::linspace(0, 1, w).view({1, 1, 1, w});
  auto base = torch::cat({yy.expand({1, 1, h, w}), xx.expand({1, 1, h, w}), (0.5 * (yy + xx)).expand({1, 1, h, w})}, 1);
  auto x = (0.8 * base + 0.2 * torch::rand({1, 3, h, w})).clamp(0, 1);
  return (x * 255).round() / 255;
}

lic::Image as_image(const torch::Tensor& x) {
  lic::Image img;
  img.x = x.contiguous();
  img.orig_channels = 3;
  img.orig_depth_bits = 8;
  return img;
}

torch::Tensor roundtrip(lic::CompressionModel& m, const lic::Image& img, std::vector<uint8_t>* bytes_out = nullptr) {
  auto f = lic::encode_image(m, img, lic::ModelMeta{});
  auto bytes = lic::serialize(f);
  if (bytes_out) *bytes_out = bytes;
  return lic::decode_image(m, lic::parse(bytes));
}

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    dir_ = fs::temp_directory_path() / ("lic_test_codec_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    fs::create_directories(dir_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& n) const { return (dir_ / n).string(); }

 private:
  fs::path dir_;
};

}  // namespace

TEST(CodecPad, ReplicatesRightAndBottom) {
  auto x = test_image(3, 5);
  auto p = lic::pad_for_codec(x);
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{1, 3, 64, 64}));
  EXPECT_TRUE(torch::equal(p.index({"...", torch::indexing::Slice(0, 3), torch::indexing::Slice(0, 5)}), x));
  EXPECT_TRUE(torch::equal(p.index({"...", 63, 4}), x.index({"...", 2, 4})));
  EXPECT_TRUE(torch::equal(p.index({"...", 1, 63}), x.index({"...", 1, 4})));
  auto q = test_image(64, 128);
  EXPECT_EQ(lic::pad_for_codec(q).sizes(), q.sizes());
}

class CodecModels : public ::testing::TestWithParam<std::string> {};

TEST_P(CodecModels, RoundtripEqualsReconstructAtOddSizes) {
  auto m = tiny_model(GetParam());
  for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {63, 65}, {130, 67}}) {
    SCOPED_TRACE(std::to_string(h) + "x" + std::to_string(w));
    auto x = test_image(h, w);
    std::vector<uint8_t> bytes;
    auto dec = roundtrip(*m, as_image(x), &bytes);
    ASSERT_EQ(dec.sizes(), x.sizes());
    EXPECT_TRUE(torch::equal(dec, lic::reconstruct(*m, x))) << "decoder and reconstruct() differ";
    EXPECT_GE(dec.min().item<float>(), 0.f);
    EXPECT_LE(dec.max().item<float>(), 1.f);
    auto f = lic::parse(bytes);
    EXPECT_EQ(f.header.model, m->name());
    EXPECT_EQ(f.header.N, 8u);
    EXPECT_EQ(f.header.M, 12u);
    EXPECT_EQ(f.header.height, uint32_t(h));
    EXPECT_EQ(f.header.width, uint32_t(w));
    EXPECT_EQ(f.header.channels, 3);
    EXPECT_EQ(f.header.fingerprint, m->fingerprint());
    EXPECT_EQ(f.streams.size(), m->has_hyperprior() ? 2u : 1u);
  }
}

TEST_P(CodecModels, DeterministicBytes) {
  auto m = tiny_model(GetParam());
  auto x = test_image(70, 90);
  auto a = lic::serialize(lic::encode_image(*m, x));
  auto b = lic::serialize(lic::encode_image(*m, x));
  EXPECT_EQ(a, b);
  // A fresh model with the same seed gives the same file.
  auto m2 = tiny_model(GetParam());
  EXPECT_EQ(lic::serialize(lic::encode_image(*m2, x)), a);
}

TEST_P(CodecModels, TrainModeIsRestoredAndIgnored) {
  auto m = tiny_model(GetParam());
  auto x = test_image(40, 40);
  auto ref = lic::reconstruct(*m, x);
  m->train();
  auto dec = roundtrip(*m, as_image(x));
  EXPECT_TRUE(m->is_training());
  EXPECT_TRUE(torch::equal(dec, ref));
  EXPECT_TRUE(torch::equal(lic::reconstruct(*m, x), ref));
}

INSTANTIATE_TEST_SUITE_P(All, CodecModels, ::testing::Values("factorized", "hyperprior", "mean-scale"),
                         [](const auto& info) {
                           std::string s = info.param;
                           s.erase(std::remove(s.begin(), s.end(), '-'), s.end());
                           return s;
                         });

TEST(CodecLarge, Roundtrip512x768) {
  auto m = tiny_model("mean-scale");
  auto x = test_image(512, 768);
  auto dec = roundtrip(*m, as_image(x));
  EXPECT_TRUE(torch::equal(dec, lic::reconstruct(*m, x)));
}

TEST(CodecFiles, GrayAndRgbaPngs) {
  TempDir tmp;
  auto m = tiny_model("hyperprior");
  cv::Mat gray(37, 51, CV_8UC1), rgba(45, 29, CV_8UC4);
  cv::randu(gray, 0, 256);
  cv::randu(rgba, 0, 256);
  ASSERT_TRUE(cv::imwrite(tmp.path("g.png"), gray));
  ASSERT_TRUE(cv::imwrite(tmp.path("a.png"), rgba));
  for (auto [file, ch] : std::vector<std::pair<std::string, int>>{{"g.png", 1}, {"a.png", 4}}) {
    SCOPED_TRACE(file);
    auto img = lic::load_image(tmp.path(file));
    ASSERT_EQ(img.orig_channels, ch);
    auto f = lic::encode_image(*m, img, lic::ModelMeta{});
    EXPECT_EQ(f.header.channels, ch);
    auto dec = lic::decode_image(*m, lic::parse(lic::serialize(f)));
    EXPECT_TRUE(torch::equal(dec, lic::reconstruct(*m, img.x)));
    // Saving and reloading gives exactly the 8-bit rounding of the decoder output.
    lic::save_image(tmp.path("out.png"), dec);
    auto back = lic::load_image(tmp.path("out.png"));
    EXPECT_TRUE(torch::equal(lic::to_uint8_hwc(back.x), lic::to_uint8_hwc(dec)));
  }
}

TEST(CodecModelCheck, WrongModelIsRefusedWithFingerprints) {
  auto a = tiny_model("hyperprior", 1);
  auto b = tiny_model("hyperprior", 2);
  auto c = tiny_model("factorized", 1);
  auto x = test_image(20, 30);
  auto f = lic::parse(lic::serialize(lic::encode_image(*a, x)));
  for (auto* other : {b.get(), c.get()}) {
    try {
      lic::decode_image(*other, f);
      FAIL() << "no error for " << other->name();
    } catch (const lic::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("file was encoded with model"), std::string::npos) << msg;
      EXPECT_NE(msg.find(lic::fingerprint_hex(a->fingerprint())), std::string::npos) << msg;
      EXPECT_NE(msg.find(lic::fingerprint_hex(other->fingerprint())), std::string::npos) << msg;
      EXPECT_NE(msg.find("decode with the same model"), std::string::npos) << msg;
    }
  }
  EXPECT_NE(a->fingerprint(), b->fingerprint());
  // The right model still decodes.
  EXPECT_NO_THROW(lic::decode_image(*a, f));
}

TEST(CodecModelCheck, MetaMustDescribeTheModel) {
  auto m = tiny_model("hyperprior");
  lic::ModelMeta meta;
  meta.name = "factorized";
  meta.N = 8;
  meta.M = 12;
  EXPECT_THROW(lic::encode_image(*m, as_image(test_image(8, 8)), meta), lic::Error);
  meta.name = "bmshj2018-hyperprior";
  EXPECT_NO_THROW(lic::encode_image(*m, as_image(test_image(8, 8)), meta));
}

TEST(CodecCorruption, TruncationsAndByteFlipsNeverCrash) {
  auto m = tiny_model("mean-scale");
  auto x = test_image(16, 24);
  auto bytes = lic::serialize(lic::encode_image(*m, x));
  auto try_decode = [&](const std::vector<uint8_t>& b) -> bool {
    try {
      auto f = lic::parse(b);
      auto dec = lic::decode_image(*m, f);
      EXPECT_EQ(dec.sizes(), (std::vector<int64_t>{1, 3, f.header.height, f.header.width}));
      return true;
    } catch (const lic::Error&) {
      return false;
    }
  };
  ASSERT_TRUE(try_decode(bytes));
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> t(bytes.begin(), bytes.begin() + n);
    EXPECT_FALSE(try_decode(t)) << "truncated to " << n << " bytes decoded";
  }
  std::mt19937 rng(3);
  int decoded = 0;
  for (size_t pos = 0; pos < bytes.size(); ++pos) {
    for (int k = 0; k < 2; ++k) {
      auto t = bytes;
      t[pos] ^= uint8_t(1 + rng() % 255);
      EXPECT_FALSE(try_decode(t)) << "flip at " << pos << " not detected (CRC)";
    }
  }
  // Corrupt streams behind a valid CRC: the rANS decoder must reject or decode, never crash.
  auto f = lic::parse(bytes);
  for (size_t s = 0; s < f.streams.size(); ++s) {
    for (size_t pos = 0; pos < f.streams[s].size(); ++pos) {
      auto g = f;
      g.streams[s][pos] ^= uint8_t(1 + rng() % 255);
      decoded += try_decode(lic::serialize(g));
      auto h = f;
      h.streams[s].resize(pos);
      decoded += try_decode(lic::serialize(h));
    }
  }
  // Header fields behind a valid CRC.
  auto g = f;
  g.header.height = 17;  // same padded size: decodes
  EXPECT_TRUE(try_decode(lic::serialize(g)));
  g.header.height = 100;  // more latents than coded
  EXPECT_FALSE(try_decode(lic::serialize(g)));
  g = f;
  g.streams.pop_back();
  EXPECT_FALSE(try_decode(lic::serialize(g)));
  SUCCEED() << decoded << " corrupted streams decoded without error";
}

TEST(CodecRate, PayloadMatchesCodeLength) {
  auto m = tiny_model("hyperprior");
  auto x = test_image(128, 192);
  auto f = lic::encode_image(*m, x);
  auto out = lic::forward_eval(*m, lic::pad_for_codec(x));
  auto syms = m->coded_symbols(out);
  ASSERT_EQ(syms.size(), f.streams.size());
  double ce_bits = 0, payload_bits = 0;
  for (size_t i = 0; i < syms.size(); ++i) {
    const double ce = syms[i].bits.sum().item<double>();
    const double pb = 8.0 * double(f.streams[i].size());
    EXPECT_NEAR(pb, ce, 0.01 * ce + 64 * 8) << syms[i].name;
    EXPECT_GE(pb + 1e-6, ce - 64) << syms[i].name;  // rANS cannot beat the ideal length by much
    ce_bits += ce;
    payload_bits += pb;
  }
  EXPECT_NEAR(payload_bits, ce_bits, 0.01 * ce_bits + 64 * 8);
}

TEST(CodecEval, ModelImageRecord) {
  auto m = tiny_model("mean-scale");
  auto x = test_image(70, 100);
  auto r = lic::evaluate_model_image(*m, as_image(x), "img.png");
  EXPECT_EQ(r.height, 70);
  EXPECT_EQ(r.width, 100);
  for (const char* k : {"bpp", "bpp_payload", "bpp_estimated", "ce", "entropy", "kl", "psnr-rgb", "ms-ssim-rgb",
                        "encoding_time", "decoding_time", "ce_y", "ce_z", "bpp_payload_y", "bpp_payload_z"})
    EXPECT_TRUE(r.has(k) && std::isfinite(r.get(k))) << k;
  EXPECT_EQ(r.get("decoded_matches_forward"), 1.0);
  EXPECT_GT(r.get("bpp"), r.get("bpp_payload"));
  auto f = lic::encode_image(*m, x);
  EXPECT_NEAR((r.get("bpp") - r.get("bpp_payload")) * 70 * 100 / 8, double(lic::header_overhead(f)), 1e-6);
  EXPECT_GE(r.get("kl"), -1e-9);
  EXPECT_NEAR(r.get("kl"), r.get("ce") - r.get("entropy"), 1e-9);
  EXPECT_NEAR(r.get("ce"), r.get("ce_y") + r.get("ce_z"), 1e-9);
  // A reconstruction identical to its 8-bit rounding gives the PSNR of the 8-bit images.
  auto xr = lic::reconstruct(*m, x);
  auto a = lic::to_uint8_hwc(x).to(torch::kDouble), b = lic::to_uint8_hwc(xr).to(torch::kDouble);
  const double mse = (a - b).pow(2).mean().item<double>();
  EXPECT_NEAR(r.get("psnr-rgb"), 10 * std::log10(255.0 * 255.0 / mse), 1e-6);
}

TEST(CodecEval, PluginEntropy) {
  // Group 0: {1, 1, 2, 2} -> 4 bits; group 1: {5, 5, 5} -> 0 bits; group 3: {-7} -> 0.
  auto s = torch::tensor({1, 1, 2, 2, 5, 5, 5, -7}, torch::kLong);
  auto g = torch::tensor({0, 0, 0, 0, 1, 1, 1, 3}, torch::kLong);
  EXPECT_NEAR(lic::plugin_entropy_bits(s, g), 4.0, 1e-12);
  // Same symbols in different groups are separate distributions.
  auto s2 = torch::tensor({0, 1, 0, 0}, torch::kLong);
  auto g2 = torch::tensor({0, 0, 1, 1}, torch::kLong);
  EXPECT_NEAR(lic::plugin_entropy_bits(s2, g2), 2.0, 1e-12);
  EXPECT_EQ(lic::plugin_entropy_bits(torch::zeros({0}, torch::kLong), torch::zeros({0}, torch::kLong)), 0.0);
}

TEST(CodecEval, ReportsJsonCsvAndCurves) {
  TempDir tmp;
  auto m = tiny_model("factorized");
  for (int i = 0; i < 2; ++i) {
    auto x = lic::to_uint8_hwc(test_image(40 + i, 50, 10 + i));
    cv::Mat rgb(int(x.size(0)), int(x.size(1)), CV_8UC3, x.data_ptr<uint8_t>()), bgr;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    ASSERT_TRUE(cv::imwrite(tmp.path("im" + std::to_string(i) + ".png"), bgr));
  }
  auto images = lic::list_images(tmp.path(""));
  ASSERT_EQ(images.size(), 2u);
  size_t calls = 0;
  auto rep = lic::evaluate_models({m.get()}, {"tiny.lic"}, images, tmp.path(""),
                                  [&](size_t done, size_t total) {
                                    ++calls;
                                    EXPECT_EQ(total, 2u);
                                    EXPECT_EQ(done, calls);
                                  });
  rep.name = "tiny";
  auto jpeg = lic::evaluate_classic("jpeg", {20, 60, 90}, images, tmp.path(""));
  auto j = rep.to_json();
  EXPECT_EQ(j["name"], "tiny");
  EXPECT_EQ(j["results"]["bpp"].size(), 1u);
  for (const char* k : {"psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time", "bpp_estimated",
                        "bpp_payload", "ce", "entropy", "kl"})
    EXPECT_TRUE(j["results"].contains(k)) << k;
  EXPECT_FALSE(j["results"].contains("ce_y"));
  ASSERT_EQ(j["per_image"].size(), 2u);
  EXPECT_EQ(j["per_image"][0]["image"], "im0.png");
  EXPECT_TRUE(j["per_image"][0].contains("ce_y"));
  const double mean_bpp = 0.5 * (rep.points[0].images[0].get("bpp") + rep.points[0].images[1].get("bpp"));
  EXPECT_NEAR(j["results"]["bpp"][0].get<double>(), mean_bpp, 1e-12);

  auto jj = jpeg.to_json();
  EXPECT_EQ(jj["results"]["bpp"].size(), 3u);
  EXPECT_EQ(jj["results"]["quality"][2], 90);
  EXPECT_FALSE(jj["results"].contains("ce"));
  EXPECT_EQ(jj["per_image"].size(), 6u);
  EXPECT_LT(jj["results"]["bpp"][0].get<double>(), jj["results"]["bpp"][2].get<double>());

  auto both = lic::reports_to_json({rep, jpeg});
  ASSERT_TRUE(both.is_array());
  auto curves = lic::rd_curves_from_json(nlohmann::json::parse(both.dump()), "x");
  ASSERT_EQ(curves.size(), 2u);
  EXPECT_EQ(curves[1].first, "jpeg");
  EXPECT_EQ(curves[1].second.size(), 3u);
  EXPECT_TRUE(lic::reports_to_json({rep}).is_object());

  auto csv = lic::reports_to_csv({rep, jpeg});
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + 2 + 6);
  EXPECT_EQ(csv.rfind("name,point,quality,image,height,width,", 0), 0u);
  auto table = lic::reports_table({rep, jpeg});
  EXPECT_NE(table.find("q=60"), std::string::npos);
  EXPECT_THROW(lic::rd_curves_from_json(nlohmann::json::parse(R"({"results": {"bpp": [1]}})"), "f"), lic::Error);
}
