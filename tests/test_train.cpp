// Training on generated images: the loss goes down, the metrics files have every column,
// and a resumed run reproduces an uninterrupted one exactly.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "lic/checkpoint.h"
#include "lic/error.h"
#include "lic/image.h"
#include "lic/train.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace lic;

namespace {

TrainConfig tiny_config(const std::string& data, const std::string& out) {
  TrainConfig c;
  c.model = "hyperprior";
  c.N = 8;
  c.M = 12;
  c.scale_levels = 64;
  c.data = data;
  c.out = out;
  c.patch = 64;
  c.batch_size = 2;
  c.lr = 1e-3;
  c.lambda = 0.01;
  c.log_every = 10;
  c.val_every = 1000;
  c.ckpt_every = 10;
  c.seed = 7;
  return c;
}

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> v;
  std::stringstream ss(line);
  std::string f;
  while (std::getline(ss, f, ',')) v.push_back(f);
  if (!line.empty() && line.back() == ',') v.push_back("");
  return v;
}

}  // namespace

TEST(Train, LossDecreasesAndMetricsHaveEveryColumn) {
  test::TempDir dir;
  auto data = test::make_image_folder(dir.path / "data", 4, 96, 80);
  auto cfg = tiny_config(data, (dir.path / "run").string());
  cfg.steps = 50;
  cfg.val = data;
  cfg.val_every = 25;
  auto res = train(cfg);
  ASSERT_EQ(res.exit_code, 0);
  std::ifstream f(dir.path / "run" / "metrics.csv");
  std::string header;
  std::getline(f, header);
  const std::vector<std::string> want = {"step", "split", "loss", "mse", "psnr", "ms_ssim", "bpp", "ce", "ce_y", "ce_z",
                                         "entropy", "entropy_y", "entropy_z", "kl", "kl_y", "kl_z", "aux_loss", "lr",
                                         "images_per_s", "skipped_steps", "bad_files", "elapsed_s"};
  EXPECT_EQ(split(header), want);
  std::vector<double> train_loss;
  int val_rows = 0;
  for (std::string line; std::getline(f, line);) {
    auto cols = split(line);
    ASSERT_EQ(cols.size(), want.size()) << line;
    for (const char* k : {"loss", "bpp", "ce", "entropy", "kl", "kl_y", "kl_z", "ce_y", "ce_z", "psnr"}) {
      auto i = std::find(want.begin(), want.end(), k) - want.begin();
      ASSERT_FALSE(cols[i].empty()) << k << " empty in " << line;
    }
    auto kl = std::stod(cols[13]);
    EXPECT_GE(kl, -1e-9) << "negative kl: " << line;
    if (cols[1] == "train") train_loss.push_back(std::stod(cols[2]));
    else ++val_rows;
  }
  ASSERT_EQ(train_loss.size(), 5u);
  EXPECT_EQ(val_rows, 2);
  EXPECT_LT(train_loss.back(), train_loss.front());
  // JSONL has the same keys
  std::ifstream j(dir.path / "run" / "metrics.jsonl");
  std::string first;
  std::getline(j, first);
  auto row = nlohmann::json::parse(first);
  for (const char* k : {"bpp", "ce", "entropy", "kl", "kl_y", "kl_z", "ce_y", "ce_z", "loss", "images_per_s"})
    EXPECT_TRUE(row.contains(k)) << k;
  EXPECT_TRUE(fs::exists(dir.path / "run" / "config.yaml"));
  EXPECT_TRUE(fs::exists(dir.path / "run" / "best.ckpt"));
}

TEST(Train, ResumeReproducesParametersExactly) {
  test::TempDir dir;
  auto data = test::make_image_folder(dir.path / "data", 3, 80, 72);
  auto straight = tiny_config(data, (dir.path / "a").string());
  straight.steps = 20;
  ASSERT_EQ(train(straight).exit_code, 0);

  auto first = tiny_config(data, (dir.path / "b").string());
  first.steps = 10;
  ASSERT_EQ(train(first).exit_code, 0);
  auto second = first;
  second.steps = 20;
  second.resume = true;
  ASSERT_EQ(train(second).exit_code, 0);

  auto a = load_checkpoint((dir.path / "a" / "last.ckpt").string());
  auto b = load_checkpoint((dir.path / "b" / "last.ckpt").string());
  EXPECT_EQ(a.step, 20);
  EXPECT_EQ(b.step, 20);
  auto pa = a.model->named_parameters();
  auto pb = b.model->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& kv : pa) EXPECT_TRUE(torch::equal(kv.value(), pb[kv.key()])) << kv.key();
}

TEST(Train, RefusesToOverwriteARunWithoutResume) {
  test::TempDir dir;
  auto data = test::make_image_folder(dir.path / "data", 2, 64, 64);
  auto cfg = tiny_config(data, (dir.path / "run").string());
  cfg.steps = 2;
  ASSERT_EQ(train(cfg).exit_code, 0);
  EXPECT_THROW(train(cfg), lic::Error);
}

TEST(TrainConfig, RejectsBadSettings) {
  test::TempDir dir;
  auto data = test::make_image_folder(dir.path / "data", 1, 64, 64);
  auto ok = tiny_config(data, (dir.path / "run").string());
  EXPECT_NO_THROW(ok.validate());
  auto bad = ok;
  bad.model = "nope";
  EXPECT_THROW(bad.validate(), lic::Error);
  bad = ok;
  bad.lambda = -1;
  EXPECT_THROW(bad.validate(), lic::Error);
  bad = ok;
  bad.data = (dir.path / "missing").string();
  EXPECT_THROW(bad.validate(), lic::Error);
  bad = ok;
  bad.patch = 100;
  EXPECT_THROW(bad.validate(), lic::Error);
  fs::create_directories(dir.path / "empty");
  bad = ok;
  bad.data = (dir.path / "empty").string();
  EXPECT_THROW(train(bad), lic::Error);
  // YAML: unknown keys are typos, not silently ignored
  std::ofstream(dir.path / "c.yaml") << "model: hyperprior\nlamda: 0.1\n";
  EXPECT_THROW(ok.load_yaml((dir.path / "c.yaml").string()), lic::Error);
}

TEST(TrainCli, ConfigErrorsGiveOneLineAndNonZeroExit) {
  test::TempDir dir;
  auto data = test::make_image_folder(dir.path / "data", 1, 64, 64);
  fs::create_directories(dir.path / "empty");
  const std::string out = " --out " + (dir.path / "run").string() + " --steps 1";
  const std::vector<std::string> cases = {
      "train --model nope --data " + data + out,
      "train --lambda -0.5 --data " + data + out,
      "train --data " + (dir.path / "missing").string() + out,
      "train --data " + (dir.path / "empty").string() + out,
      "train --config " + (dir.path / "nope.yaml").string() + out,
  };
  for (const auto& c : cases) {
    auto r = test::run_lic(c);
    EXPECT_NE(r.exit_code, 0) << c;
    EXPECT_EQ(r.error_lines(), 1) << c << "\n" << r.err;
  }
}
