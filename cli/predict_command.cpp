// flashkm predict MODEL DATA -o LABELS.npy [--distances D.npy]
#include <vector>

#include "commands.hpp"
#include "flashkm/kmeans.hpp"
#include "io/npy.hpp"
#include "output_set.hpp"

namespace flashkm::cli {

int run_predict(const PredictOptions& o) {
  OutputSet outputs;
  io::AtomicFile* labels_file = outputs.reserve(o.labels_out);
  io::AtomicFile* distances_file = outputs.reserve(o.distances_out);

  const Model model = Model::load(o.model);
  const io::LoadedMatrix data = io::load_matrix(o.data);
  const auto n = static_cast<std::size_t>(data.view.rows);
  std::vector<std::int32_t> labels(n);
  std::vector<float> distances(distances_file ? n : 0);
  flashkm::PredictOptions options;
  options.device = o.device;
  options.device_id = o.device_id;
  options.n_threads = o.n_threads;
  options.max_memory = o.max_memory;
  predict(model, data.view, labels.data(), distances_file ? distances.data() : nullptr, options);

  io::write_npy(*labels_file, labels.data(), {data.view.rows});
  if (distances_file) io::write_npy(*distances_file, distances.data(), {data.view.rows});
  outputs.commit_all();
  return 0;
}

}  // namespace flashkm::cli
