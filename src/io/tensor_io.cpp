#include "lic/tensor_io.h"

#include <fstream>
#include <iterator>

#include "lic/atomic_file.h"
#include "lic/error.h"

namespace lic {
namespace {

void flatten(const c10::IValue& v, const std::string& prefix, TensorDict& out) {
  if (v.isTensor()) {
    out.emplace_back(prefix, v.toTensor());
  } else if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict()) {
      if (!kv.key().isString()) continue;
      const std::string k = kv.key().toStringRef();
      flatten(kv.value(), prefix.empty() ? k : prefix + "." + k, out);
    }
  }
}

}  // namespace

TensorDict parse_tensor_dict(const std::vector<char>& bytes, const std::string& what) {
  c10::IValue v;
  try {
    v = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    throw Error(what + ": not a readable torch.save file (truncated or foreign)");
  }
  check(v.isGenericDict(), what + ": expected a dict of tensors");
  TensorDict out;
  flatten(v, "", out);
  return out;
}

TensorDict load_tensor_dict(const std::string& path) {
  auto raw = read_file(path);
  return parse_tensor_dict(std::vector<char>(raw.begin(), raw.end()), path);
}

std::vector<char> serialize_tensor_dict(const TensorDict& dict) {
  c10::Dict<std::string, torch::Tensor> d;
  for (const auto& [k, t] : dict) d.insert(k, t.detach().cpu().contiguous());
  return torch::pickle_save(d);
}

void save_tensor_dict(const std::string& path, const TensorDict& dict) {
  auto bytes = serialize_tensor_dict(dict);
  write_file_atomic(path, std::vector<uint8_t>(bytes.begin(), bytes.end()));
}

torch::Tensor find_tensor(const TensorDict& d, const std::string& key) {
  for (const auto& kv : d)
    if (kv.first == key) return kv.second;
  throw Error("missing tensor '" + key + "'");
}

}  // namespace lic
