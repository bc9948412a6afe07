// The `lic compress / decompress / eval / bd-rate` commands, run as the built binary.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <sstream>

#include "lic/atomic_file.h"
#include "lic/checkpoint.h"
#include "lic/codec.h"
#include "lic/image.h"
#include "lic/models.h"

namespace fs = std::filesystem;

namespace {

struct RunResult {
  int code = -1;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string q(const std::string& s) { return "'" + s + "'"; }

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string l;
  while (std::getline(ss, l)) out.push_back(l);
  return out;
}

class CliCodec : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::random_device rd;
    dir_ = fs::temp_directory_path() / ("lic_test_cli_codec_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    fs::create_directories(dir_ / "data");
    torch::manual_seed(5);
    lic::ModelOptions o;
    o.name = "hyperprior";
    o.N = 8;
    o.M = 12;
    auto m = lic::create_model(o);
    m->eval();
    m->update_tables();
    lic::ModelMeta meta;
    meta.name = "hyperprior";
    meta.N = 8;
    meta.M = 12;
    lic::export_model(path("tiny_model.pt"), *m, meta);
    torch::manual_seed(6);
    auto other = lic::create_model(o);
    other->eval();
    lic::export_model(path("other_model.pt"), *other, meta);
    // A smooth image with some noise, and a second smaller one for eval.
    cv::Mat img(50, 70, CV_8UC3), noise(50, 70, CV_8UC3);
    for (int r = 0; r < img.rows; ++r)
      for (int c = 0; c < img.cols; ++c) img.at<cv::Vec3b>(r, c) = cv::Vec3b(uint8_t(3 * r), uint8_t(3 * c), 128);
    cv::randu(noise, 0, 30);
    img += noise;
    ASSERT_TRUE(cv::imwrite(path("in.png"), img));
    ASSERT_TRUE(cv::imwrite(path("data/a.png"), img));
    ASSERT_TRUE(cv::imwrite(path("data/b.png"), img(cv::Rect(5, 3, 40, 33)).clone()));
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static std::string path(const std::string& n) { return (dir_ / n).string(); }

  static RunResult run(const std::string& args) {
    const auto out = dir_ / "stdout.txt", err = dir_ / "stderr.txt";
    // One intra-op thread: the commands work on tiny tensors, where spinning OpenMP workers
    // on a loaded machine cost far more than they give.
    const bool runtime = args.rfind("bd-rate", 0) != 0;
    const std::string cmd = std::string(LIC_BINARY) + " " + args + (runtime ? " --threads 1" : "") + " >" +
                            q(out.string()) + " 2>" + q(err.string());
    auto t0 = std::chrono::steady_clock::now();
    const int st = std::system(cmd.c_str());
    if (std::getenv("LIC_TEST_TIMING"))  // per-command wall time, to keep this file fast
      std::fprintf(stderr, "%.2f s: %s\n",
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                   args.substr(0, 60).c_str());
    RunResult r;
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
  }

  // A failed command: non-zero exit, stderr exactly one line "lic <command>: ...".
  static void expect_one_line_error(const RunResult& r, const std::string& needle = "") {
    EXPECT_NE(r.code, 0);
    auto ls = lines(r.err);
    ASSERT_EQ(ls.size(), 1u) << r.err;
    EXPECT_EQ(ls[0].rfind("lic ", 0), 0u) << r.err;
    if (!needle.empty()) EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  }

  static fs::path dir_;
};

fs::path CliCodec::dir_;

}  // namespace

TEST_F(CliCodec, CompressDecompressMatchesReconstruct) {
  auto r = run("compress --model " + q(path("tiny_model.pt")) + " " + q(path("in.png")) + " -o " +
               q(path("out.lic")));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_NE(r.out.find("in.png (70x50) -> "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" bytes, "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" bpp, "), std::string::npos) << r.out;
  const auto size = fs::file_size(path("out.lic"));
  EXPECT_NE(r.out.find(": " + std::to_string(size) + " bytes"), std::string::npos) << r.out;

  r = run("decompress --model " + q(path("tiny_model.pt")) + " " + q(path("out.lic")) + " -o " + q(path("out.png")));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("(70x50)"), std::string::npos) << r.out;

  auto model = lic::load_model(path("tiny_model.pt"));
  auto img = lic::load_image(path("in.png"));
  auto expect = lic::to_uint8_hwc(lic::reconstruct(*model, img.x));
  auto got = lic::load_image(path("out.png"));
  EXPECT_TRUE(torch::equal(lic::to_uint8_hwc(got.x), expect));

  // Default output names: IN.lic, then IN.png next to it.
  fs::copy_file(path("in.png"), path("dflt.png"));
  r = run("compress -m " + q(path("tiny_model.pt")) + " " + q(path("dflt.png")));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(path("dflt.lic")));
  fs::remove(path("dflt.png"));
  r = run("decompress -m " + q(path("tiny_model.pt")) + " " + q(path("dflt.lic")));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(torch::equal(lic::to_uint8_hwc(lic::load_image(path("dflt.png")).x), expect));
}

TEST_F(CliCodec, ErrorsAreOneLine) {
  const std::string model = " --model " + q(path("tiny_model.pt")) + " ";
  // Missing input.
  expect_one_line_error(run("compress" + model + q(path("nope.png")) + " -o " + q(path("x.lic"))), "nope.png");
  // A valid file to work on.
  ASSERT_EQ(run("compress" + model + q(path("in.png")) + " -o " + q(path("e.lic"))).code, 0);
  // Output exists without --force; with --force it is replaced.
  expect_one_line_error(run("compress" + model + q(path("in.png")) + " -o " + q(path("e.lic"))), "--force");
  EXPECT_EQ(run("compress" + model + q(path("in.png")) + " -o " + q(path("e.lic")) + " --force").code, 0);
  // -o equal to the input.
  expect_one_line_error(run("compress" + model + q(path("in.png")) + " -o " + q(path("in.png")) + " --force"),
                        "input");
  EXPECT_TRUE(fs::exists(path("in.png")));
  // Corrupt and truncated .lic files.
  auto bytes = lic::read_file(path("e.lic"));
  auto bad = bytes;
  bad[bad.size() - 6] ^= 0x5a;  // inside the last stream
  lic::write_file_atomic(path("corrupt.lic"), bad);
  expect_one_line_error(run("decompress" + model + q(path("corrupt.lic")) + " -o " + q(path("c.png"))), "CRC");
  lic::write_file_atomic(path("trunc.lic"), std::vector<uint8_t>(bytes.begin(), bytes.begin() + 20));
  expect_one_line_error(run("decompress" + model + q(path("trunc.lic")) + " -o " + q(path("c.png"))), "trunc");
  expect_one_line_error(run("decompress" + model + q(path("in.png")) + " -o " + q(path("c.png"))), "not a .lic");
  EXPECT_FALSE(fs::exists(path("c.png")));
  // Another model.
  expect_one_line_error(run("decompress --model " + q(path("other_model.pt")) + " " + q(path("e.lic")) + " -o " +
                            q(path("c.png"))),
                        "decode with the same model");
  // Size limit.
  expect_one_line_error(run("decompress" + model + q(path("e.lic")) + " -o " + q(path("c.png")) + " --max-pixels 100"),
                        "too large");
}

TEST_F(CliCodec, CliEvalAndBdRate) {
  const std::string data = " --data " + q(path("data"));
  auto r = run("eval --model " + q(path("tiny_model.pt")) + data + " --json " + q(path("m.json")) + " --csv " +
               q(path("m.csv")));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("tiny_model"), std::string::npos) << r.out;
  auto j = nlohmann::json::parse(slurp(path("m.json")));
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["name"], "tiny_model");
  EXPECT_EQ(j["per_image"].size(), 2u);
  EXPECT_EQ(j["results"]["bpp"].size(), 1u);
  EXPECT_EQ(j["per_image"][0]["decoded_matches_forward"], 1.0);
  EXPECT_EQ(lines(slurp(path("m.csv"))).size(), 3u);

  r = run("eval --codec jpeg,webp --qualities 20,50,90 --no-progress" + data + " --json " + q(path("c.json")));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  auto c = nlohmann::json::parse(slurp(path("c.json")));
  ASSERT_TRUE(c.is_array());
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0]["results"]["psnr-rgb"].size(), 3u);
  EXPECT_NE(r.out.find("q=50"), std::string::npos) << r.out;

  // Separate single-curve files.
  auto jpeg = c[0];
  lic::write_file_atomic(path("jpeg.json"), jpeg.dump());
  r = run("bd-rate " + q(path("jpeg.json")) + " " + q(path("jpeg.json")));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("+0.00%"), std::string::npos) << r.out;
  // The anchor file holds two curves: pick one by name; the test curves are all of c.json.
  r = run("bd-rate --anchor-name jpeg " + q(path("c.json")) + " " + q(path("c.json")));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("webp"), std::string::npos) << r.out;
  // Several files make one curve.
  auto split = [&](const std::string& name, int k) {
    auto p = jpeg;
    for (auto& [key, arr] : p["results"].items()) arr = nlohmann::json::array({arr[k]});
    lic::write_file_atomic(path(name), p.dump());
  };
  split("j0.json", 0);
  split("j1.json", 1);
  split("j2.json", 2);
  r = run("bd-rate --anchor " + q(path("jpeg.json")) + " --test " + q(path("j0.json")) + "," + q(path("j1.json")) +
          "," + q(path("j2.json")));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("+0.00%"), std::string::npos) << r.out;

  // Errors.
  expect_one_line_error(run("eval --model " + q(path("tiny_model.pt")) + " --data " + q(path("missing"))), "missing");
  fs::create_directories(path("empty"));
  expect_one_line_error(run("eval --codec jpeg --data " + q(path("empty"))), "no images");
  expect_one_line_error(run("bd-rate " + q(path("jpeg.json")) + " " + q(path("m.csv"))), "JSON");
}
