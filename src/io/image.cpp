#include "lic/image.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <system_error>

#include "lic/atomic_file.h"
#include "lic/error.h"

namespace fs = std::filesystem;

namespace lic {
namespace {

std::string lower_ext(const std::string& path) {
  std::string e = fs::path(path).extension().string();
  if (!e.empty() && e[0] == '.') e.erase(0, 1);
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  return e;
}

[[noreturn]] void read_fail(const std::string& path, const std::string& why) {
  throw Error("cannot read image " + path + ": " + why);
}

void add_note(std::string& note, const char* what) {
  if (!note.empty()) note += ", ";
  note += what;
}

// Checks x is [1,3,H,W] or [3,H,W] and returns it as [3,H,W].
torch::Tensor as_chw(const torch::Tensor& x, const char* what) {
  check(x.defined(), std::string(what) + ": undefined tensor");
  torch::Tensor t = x;
  if (t.dim() == 4) {
    check(t.size(0) == 1, std::string(what) + ": expected a single image (batch size 1)");
    t = t[0];
  }
  if (t.dim() != 3 || t.size(0) != 3) {
    std::ostringstream s;
    s << what << ": expected a [1,3,H,W] or [3,H,W] tensor, got " << x.sizes();
    throw Error(s.str());
  }
  check(t.size(1) > 0 && t.size(2) > 0, std::string(what) + ": empty image");
  return t;
}

}  // namespace

torch::Tensor to_uint8_hwc(const torch::Tensor& x) {
  torch::NoGradGuard ng;
  auto t = as_chw(x, "to_uint8_hwc").detach().to(torch::kCPU, torch::kFloat);
  t = torch::nan_to_num(t, 0.0, 1.0, 0.0).clamp(0.0, 1.0).mul(255.0).round();
  return t.to(torch::kUInt8).permute({1, 2, 0}).contiguous();
}

torch::Tensor from_uint8_hwc(const torch::Tensor& hwc) {
  check(hwc.defined() && hwc.dim() == 3 && hwc.size(2) == 3 && hwc.scalar_type() == torch::kUInt8,
        "from_uint8_hwc: expected a uint8 [H,W,3] tensor");
  return hwc.to(torch::kCPU).permute({2, 0, 1}).to(torch::kFloat).div(255.0).unsqueeze(0).contiguous();
}

Image load_image(const std::string& path) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (!fs::exists(st)) read_fail(path, "no such file");
  if (fs::is_directory(st)) read_fail(path, "is a directory");
  if (fs::is_regular_file(st) && fs::file_size(path, ec) == 0 && !ec) read_fail(path, "empty file");

  cv::Mat m;
  try {
    m = cv::imread(path, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    read_fail(path, std::string("decoder error: ") + e.err);
  }
  if (m.empty()) read_fail(path, "unsupported format or corrupt file");
  if (m.dims != 2 || m.rows <= 0 || m.cols <= 0) read_fail(path, "not a 2-D image");

  Image img;
  img.orig_channels = m.channels();
  const int64_t pixels = int64_t(m.rows) * m.cols;
  if (pixels > kMaxImagePixels) {
    std::ostringstream s;
    s << "image too large (" << m.cols << "x" << m.rows << ", limit " << kMaxImagePixels
      << " pixels)";
    read_fail(path, s.str());
  }

  switch (m.depth()) {
    case CV_8U:
      img.orig_depth_bits = 8;
      break;
    case CV_16U: {
      img.orig_depth_bits = 16;
      cv::Mat m8;
      m.convertTo(m8, CV_8U, 1.0 / 257.0);  // saturating, rounds to nearest (no ties occur)
      m = m8;
      add_note(img.note, "16-bit reduced to 8-bit");
      break;
    }
    case CV_32F:
    case CV_64F:
    case CV_16F:
      read_fail(path, "floating-point images are not supported");
    default:
      read_fail(path, "unsupported sample type (only unsigned 8-bit and 16-bit images)");
  }

  cv::Mat rgb;
  switch (m.channels()) {
    case 1:
      cv::cvtColor(m, rgb, cv::COLOR_GRAY2RGB);
      add_note(img.note, "gray converted to RGB");
      break;
    case 2: {  // gray + alpha
      cv::Mat gray;
      cv::extractChannel(m, gray, 0);
      cv::cvtColor(gray, rgb, cv::COLOR_GRAY2RGB);
      add_note(img.note, "gray converted to RGB");
      add_note(img.note, "alpha dropped");
      break;
    }
    case 3:
      cv::cvtColor(m, rgb, cv::COLOR_BGR2RGB);
      break;
    case 4:
      cv::cvtColor(m, rgb, cv::COLOR_BGRA2RGB);
      add_note(img.note, "alpha dropped");
      break;
    default:
      read_fail(path, "unsupported number of channels (" + std::to_string(m.channels()) + ")");
  }
  if (!rgb.isContinuous()) rgb = rgb.clone();
  auto hwc = torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8);
  img.x = from_uint8_hwc(hwc);  // copies out of the cv::Mat
  return img;
}

void save_image(const std::string& path, const torch::Tensor& x) {
  const std::string ext = lower_ext(path);
  if (ext.empty()) throw Error("cannot save image " + path + ": no file extension to pick a format");
  bool writable = false;
  try {
    writable = cv::haveImageWriter("." + ext);
  } catch (const cv::Exception&) {
    writable = false;
  }
  if (!writable) throw Error("cannot save image " + path + ": unsupported image format '." + ext + "'");

  auto hwc = to_uint8_hwc(x);
  cv::Mat rgb(int(hwc.size(0)), int(hwc.size(1)), CV_8UC3, hwc.data_ptr<uint8_t>());
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);

  std::vector<int> params;
  if (ext == "jpg" || ext == "jpeg") params = {cv::IMWRITE_JPEG_QUALITY, 95};
  std::vector<uchar> buf;
  bool ok = false;
  std::string why;
  try {
    ok = cv::imencode("." + ext, bgr, buf, params);
  } catch (const cv::Exception& e) {
    why = e.err;
  }
  if (!ok || buf.empty())
    throw Error("cannot save image " + path + ": encoding as '." + ext + "' failed" +
                (why.empty() ? std::string() : " (" + why + ")"));

  write_atomic(path, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error("cannot save image " + path + ": cannot open " + tmp + " for writing");
    f.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(buf.size()));
    f.flush();
    if (!f) throw Error("cannot save image " + path + ": write failed");
  });
}

bool is_image_path(const std::string& path) {
  static const char* kExts[] = {"png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "ppm", "pgm"};
  const std::string e = lower_ext(path);
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* k) { return e == k; });
}

std::vector<std::string> list_images(const std::string& dir, bool recursive) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw Error("cannot list images in " + dir + ": no such directory");
  if (!fs::is_directory(dir, ec)) throw Error("cannot list images in " + dir + ": not a directory");

  std::vector<std::string> out;
  auto hidden = [](const fs::path& p) {
    auto name = p.filename().string();
    return !name.empty() && name[0] == '.';
  };
  auto consider = [&](const fs::directory_entry& e) {
    std::error_code ec2;
    if (!hidden(e.path()) && e.is_regular_file(ec2) && is_image_path(e.path().string()))
      out.push_back(e.path().string());
  };
  try {
    if (recursive) {
      fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied), end;
      for (; it != end; it.increment(ec)) {
        if (ec) throw fs::filesystem_error("directory iteration", dir, ec);
        if (hidden(it->path())) {
          if (it->is_directory(ec)) it.disable_recursion_pending();
          continue;
        }
        consider(*it);
      }
    } else {
      for (auto& e : fs::directory_iterator(dir, fs::directory_options::skip_permission_denied))
        consider(e);
    }
  } catch (const fs::filesystem_error& e) {
    throw Error("cannot list images in " + dir + ": " + e.code().message());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace lic
