#include "lic/tensor_io.h"

#include <fstream>
#include <iterator>

#include "lic/atomic_file.h"
#include "lic/error.h"
#include "lic/pickle_reader.h"

namespace lic {

// Not torch::pickle_load: it cannot rebuild the collections.OrderedDict of every
// nn.Module.state_dict(), and on the files it does read the pickle reader gives the same
// tensors (test_pickle.cpp compares them), with every read bounded and checked.
TensorDict parse_tensor_dict(const std::vector<char>& bytes, const std::string& what) {
  return read_torch_save(bytes, what);
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
