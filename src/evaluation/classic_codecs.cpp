#include "lic/classic_codecs.h"

#include <chrono>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "lic/error.h"
#include "lic/image.h"

namespace lic {
namespace {

struct CodecSpec {
  const char* name;
  const char* ext;
};
constexpr CodecSpec kCodecs[] = {{"jpeg", ".jpg"}, {"webp", ".webp"}, {"jpeg2000", ".jp2"}};

const CodecSpec* find_codec(const std::string& codec) {
  for (auto& c : kCodecs)
    if (codec == c.name) return &c;
  return nullptr;
}

bool have_writer(const char* ext) {
  try {
    return cv::haveImageWriter(ext);
  } catch (const cv::Exception&) {
    return false;
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::vector<std::string> classic_codec_names() {
  std::vector<std::string> out;
  for (auto& c : kCodecs) out.emplace_back(c.name);
  return out;
}

bool classic_codec_available(const std::string& codec) {
  auto* c = find_codec(codec);
  return c != nullptr && have_writer(c->ext);
}

ClassicCoded classic_roundtrip(const std::string& codec, const torch::Tensor& x, int quality) {
  const CodecSpec* spec = find_codec(codec);
  if (!spec) throw Error("unknown classic codec '" + codec + "' (expected jpeg, webp or jpeg2000)");
  if (quality < 1 || quality > 100)
    throw Error(codec + ": quality " + std::to_string(quality) + " out of range 1..100");
  if (!have_writer(spec->ext))
    throw Error(codec + ": this OpenCV build has no " + spec->ext + " encoder");

  auto hwc = to_uint8_hwc(x);  // validates the shape
  cv::Mat rgb(int(hwc.size(0)), int(hwc.size(1)), CV_8UC3, hwc.data_ptr<uint8_t>());
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);

  std::vector<int> params;
  if (codec == "jpeg") params = {cv::IMWRITE_JPEG_QUALITY, quality};
  else if (codec == "webp") params = {cv::IMWRITE_WEBP_QUALITY, quality};
  else params = {cv::IMWRITE_JPEG2000_COMPRESSION_X1000, quality * 10};

  ClassicCoded out;
  std::vector<uchar> buf;
  cv::Mat dec;
  try {
    auto t0 = std::chrono::steady_clock::now();
    bool ok = cv::imencode(spec->ext, bgr, buf, params);
    out.encode_s = seconds_since(t0);
    if (!ok || buf.empty()) throw Error(codec + ": encoding failed");
    auto t1 = std::chrono::steady_clock::now();
    dec = cv::imdecode(buf, cv::IMREAD_COLOR);
    out.decode_s = seconds_since(t1);
  } catch (const cv::Exception& e) {
    throw Error(codec + ": OpenCV error: " + e.err);
  }
  if (dec.empty() || dec.rows != bgr.rows || dec.cols != bgr.cols || dec.type() != CV_8UC3)
    throw Error(codec + ": decoding the encoded stream failed");

  cv::Mat drgb;
  cv::cvtColor(dec, drgb, cv::COLOR_BGR2RGB);
  if (!drgb.isContinuous()) drgb = drgb.clone();
  auto t = torch::from_blob(drgb.data, {drgb.rows, drgb.cols, 3}, torch::kUInt8);
  out.x_hat = from_uint8_hwc(t).to(x.device());
  out.bytes.assign(buf.begin(), buf.end());
  return out;
}

}  // namespace lic
