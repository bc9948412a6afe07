#include "lic/image.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>

#include "lic/error.h"

namespace fs = std::filesystem;

namespace {

class ImageIo : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = fs::temp_directory_path() /
           ("lic_test_image_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

// A [1,3,H,W] tensor whose values are exact multiples of 1/255.
torch::Tensor uint8_exact(int h, int w) {
  auto v = torch::arange(3 * h * w, torch::kLong).remainder(256).view({1, 3, h, w});
  return (v.to(torch::kFloat) / 255.0).contiguous();
}

uint8_t px(const torch::Tensor& x, int c, int r, int col) {
  return uint8_t(std::lround(x[0][c][r][col].item<double>() * 255.0));
}

void expect_load_error(const std::string& p) {
  try {
    lic::load_image(p);
    FAIL() << "no error for " << p;
  } catch (const lic::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("cannot read image " + p + ": ", 0), 0u) << e.what();
  }
}

TEST_F(ImageIo, LoadsColorAsRgb) {
  cv::Mat m(5, 7, CV_8UC3, cv::Scalar(10, 20, 30));  // B, G, R
  ASSERT_TRUE(cv::imwrite(path("c.png"), m));
  auto img = lic::load_image(path("c.png"));
  ASSERT_EQ(img.x.sizes(), (std::vector<int64_t>{1, 3, 5, 7}));
  EXPECT_EQ(img.x.scalar_type(), torch::kFloat);
  EXPECT_EQ(px(img.x, 0, 2, 3), 30);
  EXPECT_EQ(px(img.x, 1, 2, 3), 20);
  EXPECT_EQ(px(img.x, 2, 2, 3), 10);
  EXPECT_EQ(img.orig_channels, 3);
  EXPECT_EQ(img.orig_depth_bits, 8);
  EXPECT_EQ(img.note, "");
}

TEST_F(ImageIo, GrayBecomesRgb) {
  cv::Mat m(6, 4, CV_8UC1);
  for (int r = 0; r < 6; ++r)
    for (int c = 0; c < 4; ++c) m.at<uint8_t>(r, c) = uint8_t(r * 40 + c);
  ASSERT_TRUE(cv::imwrite(path("g.png"), m));
  auto img = lic::load_image(path("g.png"));
  ASSERT_EQ(img.x.sizes(), (std::vector<int64_t>{1, 3, 6, 4}));
  for (int ch = 0; ch < 3; ++ch) EXPECT_EQ(px(img.x, ch, 5, 3), 203);
  EXPECT_EQ(img.orig_channels, 1);
  EXPECT_EQ(img.note, "gray converted to RGB");
}

TEST_F(ImageIo, AlphaIsDropped) {
  cv::Mat m(4, 4, CV_8UC4, cv::Scalar(10, 20, 30, 77));  // B, G, R, A
  ASSERT_TRUE(cv::imwrite(path("a.png"), m));
  auto img = lic::load_image(path("a.png"));
  ASSERT_EQ(img.x.sizes(), (std::vector<int64_t>{1, 3, 4, 4}));
  EXPECT_EQ(px(img.x, 0, 1, 1), 30);
  EXPECT_EQ(px(img.x, 2, 1, 1), 10);
  EXPECT_EQ(img.orig_channels, 4);
  EXPECT_EQ(img.note, "alpha dropped");
}

TEST_F(ImageIo, SixteenBitIsRounded) {
  cv::Mat m(3, 3, CV_16UC3, cv::Scalar(0, 257 * 100 + 128, 65535));  // B, G, R
  m.at<cv::Vec3w>(0, 0) = cv::Vec3w(257 * 7 + 129, 257 * 7 - 129, 1);
  ASSERT_TRUE(cv::imwrite(path("d.png"), m));
  auto img = lic::load_image(path("d.png"));
  EXPECT_EQ(img.orig_depth_bits, 16);
  EXPECT_EQ(img.note, "16-bit reduced to 8-bit");
  EXPECT_EQ(px(img.x, 0, 1, 1), 255);  // R = 65535
  EXPECT_EQ(px(img.x, 1, 1, 1), 100);  // G = 257*100 + 128 -> 100.498
  EXPECT_EQ(px(img.x, 2, 1, 1), 0);
  EXPECT_EQ(px(img.x, 2, 0, 0), 8);  // B = 257*7 + 129 -> 7.502
  EXPECT_EQ(px(img.x, 1, 0, 0), 6);  // G = 257*7 - 129 -> 6.498

  cv::Mat g(2, 2, CV_16UC1, cv::Scalar(257 * 50));
  ASSERT_TRUE(cv::imwrite(path("g16.png"), g));
  auto img2 = lic::load_image(path("g16.png"));
  EXPECT_EQ(img2.note, "16-bit reduced to 8-bit, gray converted to RGB");
  EXPECT_EQ(px(img2.x, 1, 0, 0), 50);
}

TEST_F(ImageIo, BadFilesThrow) {
  expect_load_error(path("missing.png"));
  { std::ofstream(path("empty.png")).flush(); }
  expect_load_error(path("empty.png"));
  {
    std::mt19937 rng(42);
    std::ofstream f(path("junk.png"), std::ios::binary);
    for (int i = 0; i < 4096; ++i) f.put(char(rng() & 0xff));
  }
  expect_load_error(path("junk.png"));
  {  // a truncated PNG: valid signature and header, data cut off
    cv::Mat m(64, 64, CV_8UC3, cv::Scalar(1, 2, 3));
    std::vector<uchar> buf;
    ASSERT_TRUE(cv::imencode(".png", m, buf));
    std::ofstream f(path("trunc.png"), std::ios::binary);
    f.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(buf.size() / 2));
  }
  expect_load_error(path("trunc.png"));
  expect_load_error(dir_.string());  // a directory
  cv::Mat fl(4, 4, CV_32FC3, cv::Scalar(0.5, 0.5, 0.5));
  if (cv::imwrite(path("f.tiff"), fl)) expect_load_error(path("f.tiff"));
}

TEST_F(ImageIo, SaveLoadRoundTripIsExactForLosslessFormats) {
  auto x = uint8_exact(9, 13);
  for (const char* name : {"r.png", "r.PNG", "r.ppm", "r.bmp", "r.webp", "r.tiff"}) {
    lic::save_image(path(name), x);
    auto img = lic::load_image(path(name));
    EXPECT_TRUE(torch::equal(lic::to_uint8_hwc(img.x), lic::to_uint8_hwc(x))) << name;
    EXPECT_EQ(img.note, "") << name;
  }
  // Overwriting an existing file works and leaves no temporary behind.
  lic::save_image(path("r.png"), x.flip(3));
  EXPECT_TRUE(torch::equal(lic::load_image(path("r.png")).x, x.flip(3)));
  int files = 0;
  for (auto& e : fs::directory_iterator(dir_)) files += e.is_regular_file();
  EXPECT_EQ(files, 6);
  // [3,H,W] input and lossy jpeg.
  lic::save_image(path("r.jpg"), x[0]);
  EXPECT_EQ(lic::load_image(path("r.jpg")).x.sizes(), x.sizes());
}

TEST_F(ImageIo, SaveErrors) {
  auto x = uint8_exact(4, 4);
  EXPECT_THROW(lic::save_image(path("x.xyz"), x), lic::Error);
  EXPECT_THROW(lic::save_image(path("noext"), x), lic::Error);
  EXPECT_THROW(lic::save_image(path("x.png"), torch::zeros({1, 1, 4, 4})), lic::Error);
  EXPECT_THROW(lic::save_image(path("x.png"), torch::zeros({2, 3, 4, 4})), lic::Error);
  EXPECT_THROW(lic::save_image(path("no_such_dir/x.png"), x), lic::Error);
  EXPECT_FALSE(fs::exists(path("x.xyz")));
}

TEST(ImageConvert, ToUint8Hwc) {
  auto x = torch::tensor({-0.5f, 0.0f, 0.51f / 255.0f, 0.49f / 255.0f, 1.0f, 2.0f}).view({1, 3, 1, 2});
  auto u = lic::to_uint8_hwc(x);
  EXPECT_EQ(u.scalar_type(), torch::kUInt8);
  ASSERT_EQ(u.sizes(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_TRUE(u.is_contiguous());
  // u[h][w][c] = x[c][h][w]
  EXPECT_EQ(u[0][0][0].item<int>(), 0);
  EXPECT_EQ(u[0][1][0].item<int>(), 0);
  EXPECT_EQ(u[0][0][1].item<int>(), 1);  // rounds to nearest
  EXPECT_EQ(u[0][1][1].item<int>(), 0);
  EXPECT_EQ(u[0][0][2].item<int>(), 255);
  EXPECT_EQ(u[0][1][2].item<int>(), 255);
  auto nan = torch::full({3, 2, 2}, NAN);
  EXPECT_EQ(lic::to_uint8_hwc(nan).sum().item<int>(), 0);
  EXPECT_THROW(lic::to_uint8_hwc(torch::zeros({1, 4, 2, 2})), lic::Error);
  auto back = lic::from_uint8_hwc(lic::to_uint8_hwc(uint8_exact(3, 5)));
  EXPECT_TRUE(torch::allclose(back, uint8_exact(3, 5)));
}

TEST(ImageConvert, IsImagePath) {
  for (const char* p : {"a.png", "b/c.JPG", "x.jpeg", "x.webp", "x.bmp", "x.tif", "x.TIFF", "x.ppm", "x.pgm"})
    EXPECT_TRUE(lic::is_image_path(p)) << p;
  for (const char* p : {"a.txt", "png", "a.png.bak", "dir/", "", "a.lic"})
    EXPECT_FALSE(lic::is_image_path(p)) << p;
}

TEST_F(ImageIo, ListImages) {
  fs::create_directories(dir_ / "sub" / "deeper");
  fs::create_directories(dir_ / ".hidden_dir");
  fs::create_directories(dir_ / "empty");
  for (const char* f : {"b.png", "a.JPG", "notes.txt", ".hidden.png", "sub/c.webp", "sub/deeper/d.bmp",
                        ".hidden_dir/e.png"})
    std::ofstream(path(f)) << "x";
  auto all = lic::list_images(dir_.string());
  std::vector<std::string> want = {path("a.JPG"), path("b.png"), path("sub/c.webp"), path("sub/deeper/d.bmp")};
  EXPECT_EQ(all, want);
  auto top = lic::list_images(dir_.string(), false);
  EXPECT_EQ(top, (std::vector<std::string>{path("a.JPG"), path("b.png")}));
  EXPECT_TRUE(lic::list_images(path("empty")).empty());
  EXPECT_THROW(lic::list_images(path("missing")), lic::Error);
  EXPECT_THROW(lic::list_images(path("b.png")), lic::Error);
}

}  // namespace
