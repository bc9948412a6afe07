// Tests for the .lic container (serialize/parse, CRC32) and atomic file writes.
#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "lic/atomic_file.h"
#include "lic/bitstream.h"
#include "lic/error.h"

namespace {

lic::LicFile sample_file() {
  lic::LicFile f;
  f.header.model = "hyperprior";
  f.header.N = 128;
  f.header.M = 192;
  f.header.fingerprint = 0x0123456789ABCDEFull;
  f.header.height = 512;
  f.header.width = 768;
  f.header.channels = 3;
  std::mt19937 rng(5);
  std::vector<uint8_t> y(100), z(12);
  for (auto& b : y) b = static_cast<uint8_t>(rng());
  for (auto& b : z) b = static_cast<uint8_t>(rng());
  f.streams = {y, z};
  return f;
}

// Tiny file used for exhaustive corruption: 1-char model, one 3-byte stream.
lic::LicFile tiny_file() {
  lic::LicFile f;
  f.header.model = "m";
  f.header.N = 1;
  f.header.M = 2;
  f.header.fingerprint = 3;
  f.header.height = 4;
  f.header.width = 5;
  f.header.channels = 1;
  f.streams = {{0xAA, 0xBB, 0xCC}};
  return f;
}

void put_le(std::vector<uint8_t>& b, size_t off, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

// Rewrites the trailing CRC so that only the intended field is "wrong".
void fix_crc(std::vector<uint8_t>& b) {
  put_le(b, b.size() - 4, lic::crc32(b.data(), b.size() - 4), 4);
}

std::string parse_error(const std::vector<uint8_t>& b, const lic::DecodeLimits& limits = {}) {
  try {
    (void)lic::parse(b, limits);
  } catch (const lic::Error& e) {
    return e.what();
  }
  return "<no error>";
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

// Offsets for a model name of length L (see docs/FORMAT.md).
struct Off {
  size_t L;
  size_t N() const { return 8 + L; }
  size_t M() const { return 12 + L; }
  size_t fingerprint() const { return 16 + L; }
  size_t height() const { return 24 + L; }
  size_t width() const { return 28 + L; }
  size_t channels() const { return 32 + L; }
  size_t stream_count() const { return 33 + L; }
  size_t first_stream() const { return 34 + L; }
};

// ---------------------------------------------------------------------------------------
// CRC32

TEST(Crc32, CheckValue) {
  const char* s = "123456789";
  EXPECT_EQ(lic::crc32(reinterpret_cast<const uint8_t*>(s), 9), 0xCBF43926u);
  EXPECT_EQ(lic::crc32(nullptr, 0), 0u);
  // Incremental use, zlib-style.
  const uint32_t a = lic::crc32(reinterpret_cast<const uint8_t*>(s), 4);
  EXPECT_EQ(lic::crc32(reinterpret_cast<const uint8_t*>(s) + 4, 5, a), 0xCBF43926u);
}

// ---------------------------------------------------------------------------------------
// serialize / parse

TEST(Bitstream, RoundTrip) {
  const auto f = sample_file();
  const auto bytes = lic::serialize(f);
  const auto g = lic::parse(bytes);
  EXPECT_EQ(g.header.model, f.header.model);
  EXPECT_EQ(g.header.N, f.header.N);
  EXPECT_EQ(g.header.M, f.header.M);
  EXPECT_EQ(g.header.fingerprint, f.header.fingerprint);
  EXPECT_EQ(g.header.height, f.header.height);
  EXPECT_EQ(g.header.width, f.header.width);
  EXPECT_EQ(g.header.channels, f.header.channels);
  EXPECT_EQ(g.streams, f.streams);
  EXPECT_EQ(bytes.size(), lic::header_overhead(f) + 100 + 12);
  // 34 + 10 (name) + 2 * 4 (lengths) + 4 (CRC).
  EXPECT_EQ(lic::header_overhead(f), 56u);
}

TEST(Bitstream, ExactLayout) {
  const auto bytes = lic::serialize(tiny_file());
  const std::vector<uint8_t> body = {
      'L',  'I',  'C',  '1',              // magic
      1,                                  // version
      35,   0,                            // header length = 34 + 1
      1,    'm',                          // model name
      1,    0,    0,    0,                // N
      2,    0,    0,    0,                // M
      3,    0,    0,    0, 0, 0, 0, 0,    // fingerprint
      4,    0,    0,    0,                // height
      5,    0,    0,    0,                // width
      1,                                  // channels
      1,                                  // stream count
      3,    0,    0,    0,                // stream 0 length
      0xAA, 0xBB, 0xCC};                  // stream 0 payload
  ASSERT_EQ(bytes.size(), body.size() + 4);
  EXPECT_TRUE(std::equal(body.begin(), body.end(), bytes.begin()));
  const uint32_t crc = lic::crc32(body.data(), body.size());
  EXPECT_EQ(bytes[body.size() + 0], static_cast<uint8_t>(crc));
  EXPECT_EQ(bytes[body.size() + 3], static_cast<uint8_t>(crc >> 24));
  EXPECT_EQ(crc, 0x20438FADu);  // zlib.crc32 of the same 42 bytes
  EXPECT_EQ(lic::header_overhead(tiny_file()), 35u + 4 + 4);
}

TEST(Bitstream, EmptyStreamsAllowed) {
  auto f = tiny_file();
  f.streams = {{}, {}, {1}, {}};
  EXPECT_EQ(lic::parse(lic::serialize(f)).streams, f.streams);
}

TEST(Bitstream, SerializeRejectsInvalidHeaders) {
  auto f = tiny_file();
  f.header.model = "";
  EXPECT_THROW(lic::serialize(f), lic::Error);
  f.header.model = std::string(65, 'a');
  EXPECT_THROW(lic::serialize(f), lic::Error);
  f.header.model = std::string(64, 'a');
  EXPECT_NO_THROW(lic::parse(lic::serialize(f)));
  f.header.model = "bad\nname";
  EXPECT_THROW(lic::serialize(f), lic::Error);
  f = tiny_file();
  f.header.channels = 2;
  EXPECT_THROW(lic::serialize(f), lic::Error);
  f = tiny_file();
  f.header.width = 0;
  EXPECT_THROW(lic::serialize(f), lic::Error);
  f = tiny_file();
  f.streams.clear();
  EXPECT_THROW(lic::serialize(f), lic::Error);
  f.streams.assign(5, {1});
  EXPECT_THROW(lic::serialize(f), lic::Error);
}

TEST(Bitstream, EverySingleByteCorruptionRejected) {
  const auto good = lic::serialize(tiny_file());
  // CRC32 detects every error confined to 32 consecutive bits, so each of these must throw.
  for (size_t pos = 0; pos < good.size(); ++pos) {
    for (int x = 1; x < 256; ++x) {
      auto b = good;
      b[pos] ^= static_cast<uint8_t>(x);
      EXPECT_THROW(lic::parse(b), lic::Error) << "pos " << pos << " xor " << x;
    }
  }
}

TEST(Bitstream, EverySingleByteCorruptionOfLargerFileRejected) {
  const auto good = lic::serialize(sample_file());
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> x(1, 255);
  for (size_t pos = 0; pos < good.size(); ++pos) {
    auto b = good;
    b[pos] ^= static_cast<uint8_t>(x(rng));
    EXPECT_THROW(lic::parse(b), lic::Error) << "pos " << pos;
  }
}

TEST(Bitstream, EveryTruncationRejected) {
  for (const auto& f : {tiny_file(), sample_file()}) {
    const auto good = lic::serialize(f);
    for (size_t len = 0; len < good.size(); ++len) {
      std::vector<uint8_t> b(good.begin(), good.begin() + len);
      EXPECT_THROW(lic::parse(b), lic::Error) << "length " << len;
    }
  }
  EXPECT_THROW(lic::parse(nullptr, 0), lic::Error);
}

TEST(Bitstream, ClearMessages) {
  const auto good = lic::serialize(tiny_file());
  const Off off{1};

  EXPECT_EQ(parse_error({'P', 'K', 3, 4, 0, 0, 0, 0}), "not a .lic file");
  EXPECT_EQ(parse_error({}), "not a .lic file");
  EXPECT_TRUE(contains(parse_error({'L', 'I'}), "truncated"));

  auto b = good;
  b[4] = 2;
  fix_crc(b);
  EXPECT_TRUE(contains(parse_error(b), "unsupported .lic version 2")) << parse_error(b);

  b = std::vector<uint8_t>(good.begin(), good.begin() + 20);
  EXPECT_TRUE(contains(parse_error(b), "truncated")) << parse_error(b);

  b = good;
  b.back() ^= 1;
  EXPECT_EQ(parse_error(b), "corrupt file: CRC mismatch");

  b = good;
  put_le(b, off.width(), 0, 4);
  fix_crc(b);
  EXPECT_TRUE(contains(parse_error(b), "empty")) << parse_error(b);

  b = good;
  put_le(b, off.height(), 0, 4);
  fix_crc(b);
  EXPECT_TRUE(contains(parse_error(b), "empty")) << parse_error(b);

  for (uint8_t c : {0, 2, 5, 255}) {
    b = good;
    b[off.channels()] = c;
    fix_crc(b);
    EXPECT_TRUE(contains(parse_error(b), "channels")) << parse_error(b);
  }

  for (uint8_t c : {0, 5}) {
    b = good;
    b[off.stream_count()] = c;
    fix_crc(b);
    EXPECT_TRUE(contains(parse_error(b), "stream count")) << parse_error(b);
  }

  b = good;
  put_le(b, off.first_stream(), 4, 4);  // one byte more than there is
  fix_crc(b);
  EXPECT_TRUE(contains(parse_error(b), "exceeds")) << parse_error(b);

  b = good;
  put_le(b, off.first_stream(), 0xFFFFFFFFu, 4);
  fix_crc(b);
  EXPECT_TRUE(contains(parse_error(b), "exceeds")) << parse_error(b);

  lic::DecodeLimits small;
  small.max_stream_bytes = 2;
  EXPECT_TRUE(contains(parse_error(good, small), "limit")) << parse_error(good, small);

  b = good;
  put_le(b, off.first_stream(), 2, 4);  // one byte less: leftover byte before the CRC
  fix_crc(b);
  EXPECT_TRUE(contains(parse_error(b), "trailing")) << parse_error(b);

  b = good;
  b.push_back(0);
  EXPECT_TRUE(contains(parse_error(b), "trailing")) << parse_error(b);

  b = good;
  b[8] = 0x07;  // non-printable model name
  fix_crc(b);
  EXPECT_TRUE(contains(parse_error(b), "model name")) << parse_error(b);

  b = good;
  b[7] = 0;  // model name length 0
  fix_crc(b);
  EXPECT_TRUE(contains(parse_error(b), "model name")) << parse_error(b);

  b = good;
  b[5] = 36;  // header length disagrees with the name length
  fix_crc(b);
  EXPECT_TRUE(contains(parse_error(b), "header length")) << parse_error(b);
}

TEST(Bitstream, OversizeDimensionsRejectedBeforeAllocation) {
  auto f = tiny_file();
  f.header.height = 0xFFFFFFFFu;
  f.header.width = 0xFFFFFFFFu;
  const auto full = lic::serialize(f);
  EXPECT_TRUE(contains(parse_error(full), "image too large")) << parse_error(full);

  // The size check happens right after the fixed header, before any stream is looked at: a
  // file cut right after the header still reports the size, not the truncation.
  const Off off{1};
  std::vector<uint8_t> header_only(full.begin(), full.begin() + off.first_stream());
  EXPECT_TRUE(contains(parse_error(header_only), "image too large")) << parse_error(header_only);

  // Just over / at the limit.
  lic::DecodeLimits lim;
  lim.max_pixels = 100;
  f.header.height = 10;
  f.header.width = 11;
  EXPECT_TRUE(contains(parse_error(lic::serialize(f), lim), "image too large"));
  f.header.width = 10;
  EXPECT_NO_THROW(lic::parse(lic::serialize(f), lim));
}

// ---------------------------------------------------------------------------------------
// atomic_file

class AtomicFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/lic_atomic_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const auto& name : list()) std::remove((dir_ + "/" + name).c_str());
    rmdir(dir_.c_str());
  }
  std::vector<std::string> list() const {
    std::vector<std::string> names;
    if (DIR* d = opendir(dir_.c_str())) {
      while (dirent* e = readdir(d)) {
        const std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(n);
      }
      closedir(d);
    }
    return names;
  }
  std::string dir_;
};

TEST_F(AtomicFile, WriteAndRead) {
  const std::string path = dir_ + "/out.lic";
  const std::vector<uint8_t> data = {0, 1, 2, 255, 128};
  lic::write_file_atomic(path, data);
  EXPECT_EQ(lic::read_file(path), data);
  lic::write_file_atomic(path, std::string("hello"));
  const auto back = lic::read_file(path);
  EXPECT_EQ(std::string(back.begin(), back.end()), "hello");
  lic::write_file_atomic(path, std::vector<uint8_t>{});
  EXPECT_TRUE(lic::read_file(path).empty());
  EXPECT_EQ(list(), std::vector<std::string>{"out.lic"});  // no temporaries left
}

TEST_F(AtomicFile, WriterThrowsLeavesOldFileIntact) {
  const std::string path = dir_ + "/out.lic";
  lic::write_file_atomic(path, std::string("old contents"));
  std::string seen_tmp;
  try {
    lic::write_atomic(path, [&](const std::string& tmp) {
      seen_tmp = tmp;
      std::ofstream(tmp, std::ios::binary) << "half-written";
      throw std::runtime_error("disk on fire");
    });
    FAIL() << "write_atomic did not throw";
  } catch (const lic::Error& e) {
    EXPECT_TRUE(contains(e.what(), path)) << e.what();
    EXPECT_TRUE(contains(e.what(), "disk on fire")) << e.what();
  }
  EXPECT_EQ(seen_tmp.rfind(path + ".tmp.", 0), 0u) << seen_tmp;
  const auto back = lic::read_file(path);
  EXPECT_EQ(std::string(back.begin(), back.end()), "old contents");
  EXPECT_EQ(list(), std::vector<std::string>{"out.lic"});
}

TEST_F(AtomicFile, WriterThatCreatesNothingFails) {
  const std::string path = dir_ + "/out.lic";
  EXPECT_THROW(lic::write_atomic(path, [](const std::string&) {}), lic::Error);
  EXPECT_TRUE(list().empty());
}

TEST_F(AtomicFile, ReadErrors) {
  try {
    (void)lic::read_file(dir_ + "/missing.lic");
    FAIL() << "read_file did not throw";
  } catch (const lic::Error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot read " + dir_ + "/missing.lic: " + std::strerror(ENOENT));
  }
  EXPECT_THROW(lic::read_file(dir_), lic::Error);  // a directory
}

TEST_F(AtomicFile, UnwritableDirectoryFails) {
  EXPECT_THROW(lic::write_file_atomic(dir_ + "/no/such/dir/out.lic", std::string("x")), lic::Error);
}

}  // namespace
