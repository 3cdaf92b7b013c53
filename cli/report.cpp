#include "report.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "core/model_format.hpp"
#include "flashkm/kmeans.hpp"

namespace flashkm::cli {
namespace {

using nlohmann::ordered_json;  // keeps keys in the order written: easier to read

ordered_json model_json(const Model& m) {
  ordered_json j;
  j["n_clusters"] = m.n_clusters;
  j["n_features"] = m.n_features;
  j["metric"] = to_string(m.metric);
  j["init"] = to_string(m.init);
  j["seed"] = m.seed;
  j["inertia"] = m.inertia;
  j["n_iter"] = m.n_iter;
  j["converged"] = m.converged;
  return j;
}

ordered_json iterations_json(const Model& m) {
  ordered_json a = ordered_json::array();
  for (const IterationInfo& it : m.history)
    a.push_back({{"iteration", it.iteration},
                 {"inertia", it.inertia},
                 {"shift", it.shift},
                 {"ms", it.ms},
                 {"n_changed", it.n_changed},
                 {"n_rechecked", it.n_rechecked}});
  return a;
}

std::string text(const ordered_json& j) { return j.dump(2) + "\n"; }

}  // namespace

std::string fit_report_json(const FitReport& r) {
  const Params& p = r.options.params;
  ordered_json j;
  j["flashkm_version"] = version();
  j["command"] = "fit";
  j["data"] = {{"path", r.options.data},
               {"format", r.data.format},
               {"dtype", r.data.file_dtype},
               {"rows", r.data.view.rows},
               {"cols", r.data.view.cols}};
  j["params"] = {{"n_clusters", p.n_clusters},
                 {"init", r.options.init},
                 {"max_iter", p.max_iter},
                 {"tol", p.tol},
                 {"seed", p.seed},
                 {"n_init", p.n_init},
                 {"metric", to_string(p.metric)},
                 {"device", to_string(p.device)},
                 {"gpus", p.device_ids},
                 {"precision", to_string(p.precision)},
                 {"threads", p.n_threads}};
  j["ranks"] = r.ranks;
  ordered_json m = model_json(r.model);
  for (const char* key : {"inertia", "n_iter", "converged"}) j[key] = m[key];
  j["cluster_weight_sum"] =
      std::accumulate(r.model.cluster_weight.begin(), r.model.cluster_weight.end(), 0.0);
  j["iterations"] = iterations_json(r.model);
  double iter_ms = 0;
  for (const IterationInfo& it : r.model.history) iter_ms += it.ms;
  j["time_ms"] = {{"total", r.total_ms}, {"init", r.init_ms}, {"iterations", iter_ms}};
  j["peak_memory_bytes"] = peak_memory_bytes();  // of this process (rank 0 when distributed)
  j["simd_level"] = cpu_simd_level();
  j["outputs"] = {{"model", r.options.model_out},
                  {"labels", r.options.labels_out},
                  {"centroids", r.options.centroids_out}};
  return text(j);
}

std::string model_info_json(const Model& m, const std::string& path, std::uint64_t file_bytes) {
  ordered_json j;
  j["path"] = path;
  j["file_bytes"] = file_bytes;
  j["format_version"] = core::kModelFormatVersion;
  const ordered_json header = model_json(m);  // named: items() must not outlive it
  for (const auto& [key, value] : header.items()) j[key] = value;
  j["n_history"] = m.history.size();
  j["cluster_weight_sum"] = std::accumulate(m.cluster_weight.begin(), m.cluster_weight.end(), 0.0);
  return text(j);
}

std::int64_t peak_memory_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream is(line.substr(6));
      std::int64_t kb = 0;
      is >> kb;  // "VmHWM:    123456 kB"
      return kb * 1024;
    }
  }
  return 0;
}

}  // namespace flashkm::cli
