// Small helpers shared by the tests: temporary folders, generated images, running the CLI.
#pragma once
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace lic::test {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("lic_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// A smooth, textured colour image (gradients, a disc, mild noise): compressible like a photo.
inline cv::Mat synthetic_image(int h, int w, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  const float fx = 2 + 6 * u(rng), fy = 2 + 6 * u(rng), ph = 6.28f * u(rng);
  cv::Mat m(h, w, CV_8UC3);
  std::normal_distribution<float> noise(0, 4);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float a = float(x) / w, b = float(y) / h;
      float v[3] = {255 * a, 255 * b, 127 + 100 * std::sin(fx * a + fy * b + ph)};
      const float dx = a - 0.5f, dy = b - 0.5f;
      if (dx * dx + dy * dy < 0.05f) v[0] = 255 - v[0];
      for (int c = 0; c < 3; ++c) m.at<cv::Vec3b>(y, x)[c] = cv::saturate_cast<uint8_t>(v[c] + noise(rng));
    }
  return m;
}

inline std::string make_image_folder(const std::filesystem::path& dir, int count, int h, int w) {
  std::filesystem::create_directories(dir);
  for (int i = 0; i < count; ++i)
    cv::imwrite((dir / ("img" + std::to_string(i) + ".png")).string(), synthetic_image(h, w, 100 + i));
  return dir.string();
}

struct RunResult {
  int exit_code = -1;
  bool signaled = false;
  std::string out, err;
  int error_lines() const {
    int n = 0;
    std::istringstream s(err);
    for (std::string l; std::getline(s, l);)
      if (!l.empty()) ++n;
    return n;
  }
};

// Runs `lic ARGS` through the shell, capturing stdout and stderr.
inline RunResult run_lic(const std::string& args, const std::string& binary = LIC_BINARY) {
  static int counter = 0;
  const auto base = std::filesystem::temp_directory_path() /
                    ("lic_run_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  const std::string o = base.string() + ".out", e = base.string() + ".err";
  const std::string cmd = binary + " " + args + " >" + o + " 2>" + e + " </dev/null";
  const int st = std::system(cmd.c_str());
  RunResult r;
  if (WIFEXITED(st)) r.exit_code = WEXITSTATUS(st);
  r.signaled = WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) > 128);
  auto slurp = [](const std::string& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  r.out = slurp(o);
  r.err = slurp(e);
  std::filesystem::remove(o);
  std::filesystem::remove(e);
  return r;
}

}  // namespace lic::test
