// Dicts of tensors in PyTorch's torch.save zip format: what Python's torch.load and
// CompressAI read and write. Written with torch::pickle_save; read with lic's own pickle
// reader (pickle_reader.h), which also reads collections.OrderedDict state dicts and
// training checkpoints.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace lic {

using TensorDict = std::vector<std::pair<std::string, torch::Tensor>>;

// Reads a torch.save'd dict {str: tensor} (a plain dict or an OrderedDict). Nested dicts
// are flattened with dotted keys ({"state_dict": {...}} -> "state_dict.x"); non-string keys
// and non-tensor values are skipped. A missing, truncated, foreign or hostile file is one
// lic::Error.
TensorDict load_tensor_dict(const std::string& path);
TensorDict parse_tensor_dict(const std::vector<char>& bytes, const std::string& what);
// Writes {str: tensor} atomically, readable by torch.load.
void save_tensor_dict(const std::string& path, const TensorDict& dict);
std::vector<char> serialize_tensor_dict(const TensorDict& dict);

torch::Tensor find_tensor(const TensorDict& d, const std::string& key);  // lic::Error if absent

}  // namespace lic
