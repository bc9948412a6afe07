#include "lic/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include <sstream>

#include "lic/atomic_file.h"
#include "lic/error.h"

namespace lic {

nlohmann::json ModelMeta::to_json() const {
  return {{"model", name},         {"N", N},
          {"M", M},                {"scale_levels", scale_levels},
          {"lambda", lambda},      {"quality", quality},
          {"metric", metric},      {"bisection_quantiles", bisection_quantiles},
          {"fingerprint", fingerprint}};
}

ModelMeta ModelMeta::from_json(const nlohmann::json& j) {
  ModelMeta m;
  m.name = j.at("model").get<std::string>();
  m.N = j.at("N").get<int64_t>();
  m.M = j.at("M").get<int64_t>();
  m.scale_levels = j.value("scale_levels", int64_t{64});
  m.lambda = j.value("lambda", 0.0);
  m.quality = j.value("quality", 0);
  m.metric = j.value("metric", std::string("mse"));
  m.bisection_quantiles = j.value("bisection_quantiles", false);
  m.fingerprint = j.value("fingerprint", uint64_t{0});
  return m;
}

namespace {

constexpr const char* kKind = "lic.kind";

torch::Tensor bytes_tensor(const std::vector<char>& b) {
  return torch::from_blob(const_cast<char*>(b.data()), {static_cast<int64_t>(b.size())}, torch::kUInt8).clone();
}

std::vector<char> tensor_bytes(const torch::Tensor& t) {
  auto c = t.contiguous();
  const char* p = reinterpret_cast<const char*>(c.data_ptr<uint8_t>());
  return std::vector<char>(p, p + c.numel());
}

struct Archive {
  nlohmann::json meta;
  std::string kind;
  std::map<std::string, torch::Tensor> tensors;
};

void write_archive(const std::string& path, const std::string& kind, const nlohmann::json& meta,
                   const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert(std::string(kKind), kind);
  d.insert(std::string("lic.meta"), meta.dump());
  for (const auto& [k, t] : tensors) d.insert(k, t.detach().cpu().contiguous());
  auto bytes = torch::pickle_save(d);
  write_file_atomic(path, std::vector<uint8_t>(bytes.begin(), bytes.end()));
}

Archive read_archive(const std::string& path) {
  auto raw = read_file(path);
  c10::IValue v;
  try {
    v = torch::pickle_load(std::vector<char>(raw.begin(), raw.end()));
  } catch (const std::exception&) {
    throw Error(path + ": not a lic model or checkpoint (truncated or foreign file)");
  }
  check(v.isGenericDict(), path + ": not a lic model or checkpoint");
  Archive a;
  for (const auto& kv : v.toGenericDict()) {
    if (!kv.key().isString()) continue;
    const auto& k = kv.key().toStringRef();
    if (k == kKind && kv.value().isString()) a.kind = kv.value().toStringRef();
    else if (k == "lic.meta" && kv.value().isString()) a.meta = nlohmann::json::parse(kv.value().toStringRef(), nullptr, false);
    else if (kv.value().isTensor()) a.tensors[k] = kv.value().toTensor();
  }
  check(!a.kind.empty() && a.meta.is_object(),
        path + ": not a lic model or checkpoint (a CompressAI state dict? use `lic import`)");
  return a;
}

ModelPtr build(const ModelMeta& meta, const Archive& a, const std::string& path) {
  ModelOptions o;
  o.name = meta.name;
  o.N = meta.N;
  o.M = meta.M;
  o.scale_levels = meta.scale_levels;
  auto model = create_model(o);
  model->bisection_quantiles = meta.bisection_quantiles;
  std::vector<std::pair<std::string, torch::Tensor>> sd;
  for (const auto& [k, t] : a.tensors)
    if (k.rfind("state.", 0) == 0) sd.emplace_back(k.substr(6), t);
  try {
    load_state_dict(*model, sd);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  return model;
}

std::vector<std::pair<std::string, torch::Tensor>> model_tensors(CompressionModel& model) {
  std::vector<std::pair<std::string, torch::Tensor>> t;
  for (auto& [k, v] : state_dict(model)) t.emplace_back("state." + k, v);
  return t;
}

}  // namespace

std::vector<char> optimizer_bytes(torch::optim::Optimizer& opt) {
  torch::serialize::OutputArchive ar;
  opt.save(ar);
  std::ostringstream os;
  ar.save_to(os);
  auto s = os.str();
  return std::vector<char>(s.begin(), s.end());
}

void load_optimizer_bytes(torch::optim::Optimizer& opt, const std::vector<char>& bytes) {
  if (bytes.empty()) return;
  torch::serialize::InputArchive ar;
  ar.load_from(bytes.data(), bytes.size());
  opt.load(ar);
}

void save_checkpoint(const std::string& path, Checkpoint& c) {
  c.model->update_tables();
  c.meta.fingerprint = c.model->fingerprint();
  auto meta = c.meta.to_json();
  meta["step"] = c.step;
  meta["train_state"] = c.train_state;
  auto t = model_tensors(*c.model);
  t.emplace_back("optimizer", bytes_tensor(c.optimizer));
  t.emplace_back("aux_optimizer", bytes_tensor(c.aux_optimizer));
  if (c.torch_rng.defined()) t.emplace_back("torch_rng", c.torch_rng);
  write_archive(path, "checkpoint", meta, t);
}

Checkpoint load_checkpoint(const std::string& path) {
  auto a = read_archive(path);
  check(a.kind == "checkpoint", path + ": is an exported model, not a training checkpoint");
  Checkpoint c;
  try {
    c.meta = ModelMeta::from_json(a.meta);
  } catch (const std::exception& e) {
    throw Error(path + ": bad metadata: " + e.what());
  }
  c.model = build(c.meta, a, path);
  c.step = a.meta.value("step", int64_t{0});
  c.train_state = a.meta.value("train_state", nlohmann::json::object());
  if (a.tensors.count("optimizer")) c.optimizer = tensor_bytes(a.tensors["optimizer"]);
  if (a.tensors.count("aux_optimizer")) c.aux_optimizer = tensor_bytes(a.tensors["aux_optimizer"]);
  if (a.tensors.count("torch_rng")) c.torch_rng = a.tensors["torch_rng"];
  return c;
}

void export_model(const std::string& path, CompressionModel& model, const ModelMeta& meta0) {
  model.update_tables();
  ModelMeta meta = meta0;
  meta.fingerprint = model.fingerprint();
  write_archive(path, "model", meta.to_json(), model_tensors(model));
}

ModelPtr load_model(const std::string& path, ModelMeta* meta_out) {
  auto a = read_archive(path);
  ModelMeta meta;
  try {
    meta = ModelMeta::from_json(a.meta);
  } catch (const std::exception& e) {
    throw Error(path + ": bad metadata: " + e.what());
  }
  auto model = build(meta, a, path);
  model->eval();
  model->update_tables();
  meta.fingerprint = model->fingerprint();
  if (meta_out) *meta_out = meta;
  return model;
}

}  // namespace lic
