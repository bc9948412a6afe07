// Outputs are written to a temporary file in the same directory, flushed, then renamed,
// so a crash never leaves a half-written file where a good one was.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lic {

// Calls write(tmp_path) then fsyncs and renames tmp_path over `path`. On failure the
// temporary is removed and lic::Error is thrown; `path` is untouched.
void write_atomic(const std::string& path, const std::function<void(const std::string& tmp_path)>& write);
void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);
void write_file_atomic(const std::string& path, const std::string& text);
std::vector<uint8_t> read_file(const std::string& path);  // lic::Error if unreadable

}  // namespace lic
