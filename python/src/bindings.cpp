// pybind11 binding of flashkm: module flashkm._flashkm.
//
// Inputs
//   * numpy arrays of float32 / float16 / float64 whose rows are contiguous (C order, or a
//     row-strided slice of one) are passed to the core as they are: no copy. f16 goes as raw
//     16-bit words. Anything else numeric (ints, bools, other strides, byte-swapped) is
//     converted once to C-contiguous float32. Complex, strings and objects raise TypeError.
//   * objects with __dlpack__ living on a CUDA device (torch / cupy tensors) are passed as a
//     MatrixView with Location::cuda; their outputs must be given as out= tensors on the same
//     device (the Python layer, flashkm._api, allocates them with the input's framework).
//   * anything else goes through numpy.asarray (CPU torch tensors, lists, memmaps, ...).
// The GIL is released around every computation. The progress callback re-acquires it,
// checks PyErr_CheckSignals() (Ctrl-C) and calls the optional Python callback; a pending
// Python error stops the fit between iterations and is re-raised as it was.
// flashkm::Error kinds map to Python exceptions in translate_error().
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <dlpack/dlpack.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "flashkm/flashkm.hpp"

namespace py = pybind11;
namespace fk = flashkm;

namespace {

// Data pointer of the last input matrix handed to the core (tests check zero copy with it).
thread_local std::uintptr_t g_last_input_ptr = 0;

// ---- Python exception classes ------------------------------------------------------------

// Raised for dtypes flashkm cannot read (complex, strings): a TypeError that is also a
// ValueError, because scikit-learn's estimator checks expect ValueError for complex data.
PyObject* g_dtype_error = nullptr;

[[noreturn]] void raise_dtype_error(const std::string& msg) {
  PyErr_SetString(g_dtype_error, msg.c_str());
  throw py::error_already_set();
}

PyObject* exception_for(fk::ErrorKind kind) {
  switch (kind) {
    case fk::ErrorKind::invalid_argument: return PyExc_ValueError;
    case fk::ErrorKind::unsupported_type: return PyExc_TypeError;
    case fk::ErrorKind::out_of_memory: return PyExc_MemoryError;
    case fk::ErrorKind::io: return PyExc_OSError;
    case fk::ErrorKind::format: return PyExc_ValueError;
    case fk::ErrorKind::device_unavailable: return PyExc_RuntimeError;
    case fk::ErrorKind::interrupted: return PyExc_KeyboardInterrupt;
    case fk::ErrorKind::internal: return PyExc_RuntimeError;
  }
  return PyExc_RuntimeError;
}

// ---- inputs -------------------------------------------------------------------------------

// A matrix view plus whatever keeps its memory alive. Destroyed with the GIL held.
struct Input {
  fk::MatrixView view;
  py::object keep;                 // the numpy array (original or converted) or the tensor
  DLManagedTensor* dl = nullptr;   // consumed DLPack tensor, released in the destructor

  Input() = default;
  Input(const Input&) = delete;
  Input& operator=(const Input&) = delete;
  Input(Input&& o) noexcept : view(o.view), keep(std::move(o.keep)), dl(std::exchange(o.dl, nullptr)) {}
  ~Input() {
    if (dl != nullptr && dl->deleter != nullptr) dl->deleter(dl);
  }
  bool on_cuda() const { return view.where == fk::Location::cuda; }
};

bool is_aligned(const py::array& a) {
  return (a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) != 0;
}

std::string dtype_name(const py::dtype& dt) { return dt.attr("name").cast<std::string>(); }

// numpy array -> Input (zero copy where possible). `what` names the argument in messages.
Input from_numpy(py::array a, const char* what) {
  if (a.ndim() != 2) {
    throw py::value_error(std::string("Expected 2D array for ") + what + ", got " + std::to_string(a.ndim()) +
                          "D array instead. Reshape your data either using array.reshape(-1, 1) if "
                          "your data has a single feature or array.reshape(1, -1) if it contains a "
                          "single sample.");
  }
  py::dtype dt = a.dtype();
  const char kind = dt.kind();
  const auto itemsize = static_cast<std::int64_t>(dt.itemsize());
  if (kind == 'c') raise_dtype_error(std::string("Complex data not supported: ") + what + " has dtype " + dtype_name(dt));
  if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b') {
    raise_dtype_error(std::string(what) + " has dtype " + dtype_name(dt) +
                      "; flashkm needs numbers (float32, float16, float64 or integers)");
  }
  const std::int64_t rows = a.shape(0), cols = a.shape(1);
  Input in;
  bool native = false;
  fk::DType t = fk::DType::f32;
  if (kind == 'f' && dt.attr("isnative").cast<bool>()) {
    if (itemsize == 4) native = true, t = fk::DType::f32;
    else if (itemsize == 2) native = true, t = fk::DType::f16;
    else if (itemsize == 8) native = true, t = fk::DType::f64;
  }
  if (native && is_aligned(a)) {
    const std::int64_t s0 = a.strides(0), s1 = a.strides(1);
    const bool inner_ok = cols <= 1 || s1 == itemsize;
    const bool outer_ok = rows <= 1 || (s0 > 0 && s0 % itemsize == 0 && s0 / itemsize >= cols);
    if (inner_ok && outer_ok) {
      const std::int64_t row_stride = rows <= 1 ? cols : s0 / itemsize;
      in.view = fk::MatrixView::raw(a.data(), t, rows, cols, row_stride == cols ? 0 : row_stride);
      in.keep = std::move(a);
      g_last_input_ptr = reinterpret_cast<std::uintptr_t>(in.view.data);
      return in;
    }
  }
  // One conversion to C-contiguous float32.
  auto c = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
  if (!c) throw py::error_already_set();
  in.view = fk::MatrixView::of(c.data(), rows, cols);
  in.keep = std::move(c);
  g_last_input_ptr = reinterpret_cast<std::uintptr_t>(in.view.data);
  return in;
}

bool dlpack_on_cuda(const py::object& obj) {
  if (!py::hasattr(obj, "__dlpack_device__")) return false;
  py::tuple dev = obj.attr("__dlpack_device__")();
  const int type = dev[0].cast<int>();
  return type == kDLCUDA || type == kDLCUDAManaged;
}

// Takes ownership of the DLPack tensor behind obj.__dlpack__().
DLManagedTensor* consume_dlpack(const py::object& obj, const char* what) {
  py::object cap = obj.attr("__dlpack__")();
  PyObject* p = cap.ptr();
  if (!PyCapsule_IsValid(p, "dltensor")) {
    throw py::type_error(std::string(what) + ".__dlpack__() did not return a DLPack capsule (or it was already used)");
  }
  auto* dl = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(p, "dltensor"));
  if (dl == nullptr) throw py::error_already_set();
  // Per the DLPack protocol: rename so that the capsule destructor leaves the tensor to us.
  if (PyCapsule_SetName(p, "used_dltensor") != 0) throw py::error_already_set();
  return dl;
}

struct DLHolder {  // RAII for a consumed tensor that is not moved into an Input
  DLManagedTensor* dl;
  ~DLHolder() {
    if (dl != nullptr && dl->deleter != nullptr) dl->deleter(dl);
  }
};

// A CUDA tensor (torch/cupy) -> Input with Location::cuda. No conversion is possible here:
// dtypes other than float32/float16/bfloat16/float64 and non-row-contiguous layouts raise.
Input from_dlpack(const py::object& obj, const char* what) {
  Input in;
  in.dl = consume_dlpack(obj, what);
  in.keep = obj;
  const DLTensor& t = in.dl->dl_tensor;
  if (t.ndim != 2) {
    throw py::value_error(std::string("Expected 2D tensor for ") + what + ", got " + std::to_string(t.ndim) + "D");
  }
  fk::DType dt;
  if (t.dtype.lanes != 1) raise_dtype_error(std::string(what) + ": vector (lanes > 1) dtypes are not supported");
  if (t.dtype.code == kDLFloat && t.dtype.bits == 32) dt = fk::DType::f32;
  else if (t.dtype.code == kDLFloat && t.dtype.bits == 16) dt = fk::DType::f16;
  else if (t.dtype.code == kDLFloat && t.dtype.bits == 64) dt = fk::DType::f64;
  else if (t.dtype.code == kDLBfloat && t.dtype.bits == 16) dt = fk::DType::bf16;
  else if (t.dtype.code == kDLComplex) raise_dtype_error(std::string("Complex data not supported: ") + what);
  else {
    raise_dtype_error(std::string(what) + ": CUDA tensors must be float32, float16, bfloat16 or float64 "
                      "(convert with .float() / .astype('float32'))");
  }
  const std::int64_t rows = t.shape[0], cols = t.shape[1];
  std::int64_t row_stride = 0;
  if (t.strides != nullptr) {
    const bool inner_ok = cols <= 1 || t.strides[1] == 1;
    const bool outer_ok = rows <= 1 || t.strides[0] >= cols;
    if (!inner_ok || !outer_ok) {
      throw py::value_error(std::string(what) + ": CUDA tensor rows must be contiguous (call .contiguous())");
    }
    row_stride = (rows <= 1 || t.strides[0] == cols) ? 0 : t.strides[0];
  }
  const void* data = static_cast<const char*>(t.data) + t.byte_offset;
  in.view = fk::MatrixView::raw(data, dt, rows, cols, row_stride, fk::Location::cuda, t.device.device_id);
  g_last_input_ptr = reinterpret_cast<std::uintptr_t>(data);
  return in;
}

Input to_input(const py::object& x, const char* what) {
  if (py::isinstance<py::array>(x)) return from_numpy(py::reinterpret_borrow<py::array>(x), what);
  if (py::hasattr(x, "__dlpack__") && dlpack_on_cuda(x)) return from_dlpack(x, what);
  if (py::isinstance<py::str>(x) || py::isinstance<py::bytes>(x)) {
    raise_dtype_error(std::string(what) + " must be a 2D array of numbers, got a string");
  }
  py::object np = py::module_::import("numpy");
  return from_numpy(np.attr("asarray")(x), what);
}

// A writable output: numpy (host) or a DLPack tensor (same device as the input).
struct Output {
  void* data = nullptr;
  py::object obj;
  DLManagedTensor* dl = nullptr;
  Output() = default;
  Output(const Output&) = delete;
  Output(Output&& o) noexcept : data(o.data), obj(std::move(o.obj)), dl(std::exchange(o.dl, nullptr)) {}
  Output& operator=(Output&& o) noexcept {
    std::swap(data, o.data);
    std::swap(obj, o.obj);
    std::swap(dl, o.dl);
    return *this;
  }
  ~Output() {
    if (dl != nullptr && dl->deleter != nullptr) dl->deleter(dl);
  }
};

// Allocates (host input, out is None) or checks a caller-given output of shape `shape`.
template <class T>
Output make_output(const py::object& out, const Input& x, std::vector<std::int64_t> shape, const char* what) {
  Output o;
  std::int64_t count = 1;
  for (auto s : shape) count *= s;
  if (out.is_none()) {
    if (x.on_cuda()) {
      throw py::value_error(std::string(what) + ": CUDA input needs a preallocated CUDA output; use the "
                            "flashkm.predict/transform/fit wrappers, which allocate it");
    }
    py::array_t<T> a(shape);
    o.data = a.mutable_data();
    o.obj = std::move(a);
    return o;
  }
  if (x.on_cuda()) {
    if (!dlpack_on_cuda(out)) throw py::value_error(std::string(what) + " must be a CUDA tensor for CUDA input");
    o.dl = consume_dlpack(out, what);
    o.obj = out;
    const DLTensor& t = o.dl->dl_tensor;
    const bool want_float = std::is_floating_point_v<T>;
    const bool dtype_ok = t.dtype.lanes == 1 && t.dtype.bits == sizeof(T) * 8 &&
                          t.dtype.code == (want_float ? kDLFloat : kDLInt);
    if (!dtype_ok) throw py::type_error(std::string(what) + " has the wrong dtype");
    if (t.device.device_id != x.view.device_id) throw py::value_error(std::string(what) + " is on another device than the input");
    std::int64_t n = 1;
    for (int i = 0; i < t.ndim; ++i) n *= t.shape[i];
    if (n != count) throw py::value_error(std::string(what) + " has the wrong shape");
    if (t.strides != nullptr) {  // must be C-contiguous
      std::int64_t expect = 1;
      for (int i = t.ndim - 1; i >= 0; --i) {
        if (t.shape[i] != 1 && t.strides[i] != expect) throw py::value_error(std::string(what) + " must be contiguous");
        expect *= t.shape[i];
      }
    }
    o.data = static_cast<char*>(t.data) + t.byte_offset;
    return o;
  }
  auto a = py::array_t<T, py::array::c_style>::ensure(out);
  if (!a || !a.is(out) || !a.writeable() || a.size() != count) {
    PyErr_Clear();
    throw py::value_error(std::string(what) + " must be a writable C-contiguous numpy array of dtype " +
                          dtype_name(py::dtype::of<T>()) + " with " + std::to_string(count) + " elements");
  }
  o.data = a.mutable_data();
  o.obj = out;
  return o;
}

// sample_weight [N]: host -> float32 numpy (converted if needed); CUDA input -> float32 tensor.
struct Weights {
  const float* data = nullptr;
  py::object keep;
  DLManagedTensor* dl = nullptr;
  ~Weights() {
    if (dl != nullptr && dl->deleter != nullptr) dl->deleter(dl);
  }
};

void load_weights(Weights& w, const py::object& sw, const Input& x) {
  if (sw.is_none()) return;
  const std::int64_t n = x.view.rows;
  if (x.on_cuda()) {
    if (!dlpack_on_cuda(sw)) throw py::value_error("sample_weight must be a CUDA tensor when X is on a CUDA device");
    w.dl = consume_dlpack(sw, "sample_weight");
    w.keep = sw;
    const DLTensor& t = w.dl->dl_tensor;
    if (!(t.dtype.code == kDLFloat && t.dtype.bits == 32 && t.dtype.lanes == 1)) {
      throw py::type_error("sample_weight must be float32 for CUDA input");
    }
    if (t.ndim != 1 || t.shape[0] != n || (t.strides != nullptr && n > 1 && t.strides[0] != 1)) {
      throw py::value_error("sample_weight must be a contiguous 1D tensor of length n_samples=" + std::to_string(n));
    }
    w.data = reinterpret_cast<const float*>(static_cast<const char*>(t.data) + t.byte_offset);
    return;
  }
  auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(sw);
  if (!a) throw py::error_already_set();
  if (a.ndim() != 1 || a.shape(0) != n) {
    throw py::value_error("sample_weight.shape == " + py::str(py::object(a.attr("shape"))).cast<std::string>() +
                          ", expected (" + std::to_string(n) + ",)!");
  }
  w.data = a.data();
  w.keep = std::move(a);
}

// ---- progress / interruption --------------------------------------------------------------

struct Progress {
  py::object user;                           // None or callable(run, IterationInfo) -> bool|None
  std::optional<py::error_already_set> error;  // Python error that stopped the fit
};

fk::ProgressFn make_progress(Progress& state) {
  return [&state](int run, const fk::IterationInfo& info) -> bool {
    py::gil_scoped_acquire gil;
    if (state.error) return false;
    if (PyErr_CheckSignals() != 0) {  // Ctrl-C (runs the Python SIGINT handler)
      state.error.emplace();
      return false;
    }
    if (!state.user.is_none()) {
      try {
        py::object r = state.user(run, info);
        if (!r.is_none() && !r.cast<bool>()) return false;
      } catch (py::error_already_set& e) {
        state.error.emplace(std::move(e));
        return false;
      }
    }
    return true;
  };
}

// Runs f with the GIL released; re-raises a Python error captured by the progress callback.
template <class F>
void run_released(Progress* progress, F&& f) {
  try {
    py::gil_scoped_release release;
    f();
  } catch (const fk::Error& e) {
    if (progress != nullptr && progress->error && e.kind() == fk::ErrorKind::interrupted) {
      py::error_already_set err = std::move(*progress->error);
      progress->error.reset();
      throw err;
    }
    throw;
  }
}

fk::PredictOptions predict_options(const Input& x, const py::object& device, int device_id, int n_threads) {
  fk::PredictOptions o;
  if (device.is_none()) {
    o.device = x.on_cuda() ? fk::Device::cuda : fk::Device::cpu;
    o.device_id = x.on_cuda() ? x.view.device_id : device_id;
  } else {
    o.device = fk::parse_device(device.cast<std::string>());
    o.device_id = device_id;
  }
  o.n_threads = n_threads;
  return o;
}

std::string fspath(const py::object& p) {
  return py::str(py::module_::import("os").attr("fspath")(p)).cast<std::string>();
}

py::array_t<float> centroids_array(const fk::Model& m) {
  py::array_t<float> a({m.n_clusters, m.n_features});
  if (!m.centroids.empty()) std::memcpy(a.mutable_data(), m.centroids.data(), m.centroids.size() * sizeof(float));
  return a;
}

}  // namespace

PYBIND11_MODULE(_flashkm, m) {
  m.doc() = "flashkm: exact, deterministic k-means (C++ core binding; use the flashkm package)";

  g_dtype_error = PyErr_NewExceptionWithDoc(
      "flashkm.DTypeError",
      "Input of a dtype flashkm cannot read (complex, strings). Subclass of TypeError and ValueError.",
      py::make_tuple(py::handle(PyExc_TypeError), py::handle(PyExc_ValueError)).release().ptr(), nullptr);
  m.attr("DTypeError") = py::handle(g_dtype_error);

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fk::Error& e) {
      PyErr_SetString(exception_for(e.kind()), e.what());
    }
  });

  py::class_<fk::IterationInfo>(m, "IterationInfo", "What one Lloyd iteration did.")
      .def_readonly("iteration", &fk::IterationInfo::iteration)
      .def_readonly("inertia", &fk::IterationInfo::inertia)
      .def_readonly("shift", &fk::IterationInfo::shift)
      .def_readonly("ms", &fk::IterationInfo::ms)
      .def_readonly("n_changed", &fk::IterationInfo::n_changed)
      .def_readonly("n_rechecked", &fk::IterationInfo::n_rechecked)
      .def("__repr__", [](const fk::IterationInfo& i) {
        return "IterationInfo(iteration=" + std::to_string(i.iteration) + ", inertia=" + py::repr(py::float_(i.inertia)).cast<std::string>() +
               ", shift=" + py::repr(py::float_(i.shift)).cast<std::string>() + ", n_changed=" + std::to_string(i.n_changed) + ")";
      });

  py::class_<fk::Model>(m, "Model", "A fitted k-means model: centroids plus how they were obtained.")
      .def(py::init([](py::array_t<float, py::array::c_style | py::array::forcecast> centroids, const std::string& metric) {
             if (centroids.ndim() != 2 || centroids.shape(0) < 1 || centroids.shape(1) < 1) {
               throw py::value_error("centroids must be a non-empty 2D array [n_clusters x n_features]");
             }
             fk::Model model;
             model.n_clusters = centroids.shape(0);
             model.n_features = centroids.shape(1);
             model.metric = fk::parse_metric(metric);
             model.centroids.assign(centroids.data(), centroids.data() + centroids.size());
             model.cluster_weight.assign(static_cast<std::size_t>(model.n_clusters), 0.0);
             model.init = fk::InitMethod::given;
             return model;
           }),
           py::arg("centroids"), py::arg("metric") = "l2",
           "A model from given centroids [K x D] (for predict/transform without fitting).")
      .def_readonly("n_clusters", &fk::Model::n_clusters)
      .def_readonly("n_features", &fk::Model::n_features)
      .def_property_readonly("metric", [](const fk::Model& m) { return std::string(fk::to_string(m.metric)); })
      .def_property_readonly("centroids", &centroids_array, "[K x D] float32 (a copy)")
      .def_property_readonly("cluster_weight", [](const fk::Model& m) {
        return py::array_t<double>(static_cast<py::ssize_t>(m.cluster_weight.size()), m.cluster_weight.data());
      })
      .def_readonly("inertia", &fk::Model::inertia)
      .def_readonly("n_iter", &fk::Model::n_iter)
      .def_readonly("converged", &fk::Model::converged)
      .def_readonly("seed", &fk::Model::seed)
      .def_property_readonly("init", [](const fk::Model& m) { return std::string(fk::to_string(m.init)); })
      .def_readonly("history", &fk::Model::history)
      .def("to_bytes", [](const fk::Model& m) {
        std::vector<std::uint8_t> b;
        {
          py::gil_scoped_release release;
          b = m.to_bytes();
        }
        return py::bytes(reinterpret_cast<const char*>(b.data()), b.size());
      })
      .def_static("from_bytes", [](py::buffer b) {
        py::buffer_info info = b.request();
        if (info.ndim != 1 && info.ndim != 0) throw py::value_error("from_bytes needs a 1D bytes-like object");
        const auto size = static_cast<std::size_t>(info.size * info.itemsize);
        py::gil_scoped_release release;
        return fk::Model::from_bytes(static_cast<const std::uint8_t*>(info.ptr), size);
      })
      .def("save", [](const fk::Model& m, const py::object& path) {
        const std::string p = fspath(path);
        py::gil_scoped_release release;
        m.save(p);
      }, py::arg("path"), "Write the model file atomically (docs/FORMAT.md).")
      .def_static("load", [](const py::object& path) {
        const std::string p = fspath(path);
        py::gil_scoped_release release;
        return fk::Model::load(p);
      }, py::arg("path"))
      .def(py::pickle(
          [](const fk::Model& m) {
            auto b = m.to_bytes();
            return py::make_tuple(py::bytes(reinterpret_cast<const char*>(b.data()), b.size()));
          },
          [](py::tuple t) {
            std::string s = t[0].cast<std::string>();
            return fk::Model::from_bytes(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
          }))
      .def("__repr__", [](const fk::Model& m) {
        return "flashkm.Model(n_clusters=" + std::to_string(m.n_clusters) + ", n_features=" + std::to_string(m.n_features) +
               ", metric='" + fk::to_string(m.metric) + "', inertia=" + py::repr(py::float_(m.inertia)).cast<std::string>() +
               ", n_iter=" + std::to_string(m.n_iter) + ")";
      });

  m.def(
      "fit",
      [](const py::object& x, std::int64_t n_clusters, const py::object& init, int max_iter, double tol, int n_init,
         std::uint64_t seed, const std::string& metric, const std::string& device, int device_id,
         const std::string& precision, bool certify, int n_threads, const py::object& sample_weight,
         const py::object& progress, bool return_labels, const py::object& labels_out,
         const std::vector<int>& device_ids, const std::string& checkpoint, int checkpoint_every, bool resume,
         std::int64_t max_memory) {
        Input in = to_input(x, "X");
        fk::Params p;
        p.n_clusters = n_clusters;
        p.max_iter = max_iter;
        p.tol = tol;
        p.n_init = n_init;
        p.seed = seed;
        p.metric = fk::parse_metric(metric);
        p.device = fk::parse_device(device);
        p.device_id = device_id;
        p.device_ids = device_ids;
        p.precision = fk::parse_precision(precision);
        p.certify = certify;
        p.n_threads = n_threads;
        p.checkpoint_path = checkpoint;
        p.checkpoint_every = checkpoint_every;
        p.resume = resume;
        p.max_memory = max_memory;
        fk::FitArgs args;
        py::array_t<float, py::array::c_style | py::array::forcecast> init_arr;
        if (py::isinstance<py::str>(init)) {
          p.init = fk::parse_init(init.cast<std::string>());
          if (p.init == fk::InitMethod::given) throw py::value_error("init='given' needs the centroids: pass init=<array>");
        } else {
          if (!py::isinstance<py::array>(init) && py::hasattr(init, "__dlpack__") && dlpack_on_cuda(init)) {
            py::object host = py::hasattr(init, "get") ? init.attr("get")()                 // cupy
                                                       : init.attr("cpu")().attr("numpy")();  // torch
            init_arr = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(host);
          } else {
            init_arr = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(init);
          }
          if (!init_arr) throw py::error_already_set();
          if (init_arr.ndim() != 2 || init_arr.shape(0) != n_clusters || init_arr.shape(1) != in.view.cols) {
            throw py::value_error("The shape of the initial centers " + py::str(py::object(init_arr.attr("shape"))).cast<std::string>() +
                                  " does not match the number of clusters " + std::to_string(n_clusters) +
                                  " and the number of features " + std::to_string(in.view.cols) + " of the data");
          }
          p.init = fk::InitMethod::given;
          args.init_centroids = init_arr.data();
        }
        Weights w;
        load_weights(w, sample_weight, in);
        args.sample_weight = w.data;
        Output labels;
        if (return_labels || !labels_out.is_none()) {
          labels = make_output<std::int32_t>(labels_out, in, {in.view.rows}, "labels_out");
          args.labels = static_cast<std::int32_t*>(labels.data);
        }
        Progress state{progress, std::nullopt};
        p.progress = make_progress(state);
        fk::Model model;
        run_released(&state, [&] { model = fk::fit(in.view, p, args); });
        return py::make_tuple(std::move(model), labels.obj ? labels.obj : py::object(py::none()));
      },
      py::arg("X"), py::arg("n_clusters") = 8, py::arg("init") = "k-means++", py::arg("max_iter") = 300,
      py::arg("tol") = 1e-4, py::arg("n_init") = 1, py::arg("seed") = 0, py::arg("metric") = "l2",
      py::arg("device") = "cpu", py::arg("device_id") = 0, py::arg("precision") = "auto", py::arg("certify") = true,
      py::arg("n_threads") = 0, py::arg("sample_weight") = py::none(), py::arg("progress") = py::none(),
      py::arg("return_labels") = true, py::arg("labels_out") = py::none(), py::arg("device_ids") = std::vector<int>{},
      py::arg("checkpoint") = "", py::arg("checkpoint_every") = 1, py::arg("resume") = false,
      py::arg("max_memory") = 0,
      "Fit k-means to X [N x D]. init: 'k-means++', 'k-means||', 'random' or an array [K x D].\n"
      "device_ids: several CUDA devices to shard the rows over (multi-GPU, device 'cuda').\n"
      "checkpoint: file saved atomically after iterations; resume=True continues from it.\n"
      "max_memory: CPU: bytes the backend may keep resident (0: half the RAM); CUDA: device bytes (0: the free memory), host data over it is streamed; see docs.\n"
      "progress(run, IterationInfo) -> bool|None is called after every iteration; False stops the fit.\n"
      "Returns (Model, labels or None).");

  m.def(
      "fit_batched",
      [](const py::object& xs, const py::object& offsets, const py::object& n_clusters, const py::object& init,
         int max_iter, double tol, std::uint64_t seed, const std::string& metric, const std::string& device,
         int device_id, const std::string& precision, bool certify, int n_threads, const py::object& sample_weight,
         const py::object& progress) {
        fk::Params p;
        p.max_iter = max_iter;
        p.tol = tol;
        p.seed = seed;
        p.metric = fk::parse_metric(metric);
        p.device = fk::parse_device(device);
        p.device_id = device_id;
        p.precision = fk::parse_precision(precision);
        p.certify = certify;
        p.n_threads = n_threads;
        const bool ragged = !offsets.is_none();
        // ---- rows: a list of 2D arrays, or one 2D array with offsets [B + 1] ----
        std::vector<Input> inputs;
        std::vector<std::int64_t> off;
        if (ragged) {
          inputs.push_back(to_input(xs, "X"));
          auto o = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(offsets);
          if (!o) throw py::type_error("offsets must be a 1D array of integers [B + 1]");
          if (o.ndim() != 1) throw py::value_error("offsets must be a 1D array [B + 1], got " + std::to_string(o.ndim()) + "D");
          off.assign(o.data(), o.data() + o.size());
        } else {
          if (!py::isinstance<py::list>(xs) && !py::isinstance<py::tuple>(xs))
            throw py::type_error("fit_batched: X must be a list of 2D arrays (one per problem) or one 2D array with offsets");
          for (const py::handle h : xs) inputs.push_back(to_input(py::reinterpret_borrow<py::object>(h), "X[b]"));
        }
        for (const Input& in : inputs)
          if (in.on_cuda()) throw py::value_error("fit_batched takes host arrays (device='cuda' computes on the GPU)");
        const std::size_t B = ragged ? (off.empty() ? 0 : off.size() - 1) : inputs.size();
        // ---- K: one int for all, or one per problem ----
        std::vector<std::int64_t> ks;
        if (py::isinstance<py::int_>(n_clusters)) {
          p.n_clusters = n_clusters.cast<std::int64_t>();
          if (p.n_clusters < 1) throw py::value_error("n_clusters must be >= 1, got " + std::to_string(p.n_clusters));
        } else if (py::isinstance<py::str>(n_clusters) || !py::hasattr(n_clusters, "__len__")) {
          throw py::type_error("n_clusters must be an int or a sequence of ints (one per problem)");
        } else {
          for (const py::handle h : n_clusters) {
            if (!py::isinstance<py::int_>(h) && !py::hasattr(h, "__index__"))
              throw py::type_error("n_clusters must be an int or a sequence of ints (one per problem)");
            ks.push_back(py::reinterpret_borrow<py::object>(h).attr("__index__")().cast<std::int64_t>());
          }
          if (ks.size() != B)
            throw py::value_error("n_clusters has " + std::to_string(ks.size()) + " entries for " + std::to_string(B) +
                                  " problems");
          p.n_clusters = ks.empty() ? 1 : *std::max_element(ks.begin(), ks.end());
          for (auto k : ks)
            if (k < 1) throw py::value_error("n_clusters must be >= 1, got " + std::to_string(k));
        }
        auto k_of = [&](std::size_t b) { return ks.empty() ? p.n_clusters : ks[b]; };
        // ---- init: a method name, or a list of arrays [K_b x D] ----
        std::vector<py::array_t<float, py::array::c_style | py::array::forcecast>> init_arrs;
        std::vector<float> init_stack;
        if (py::isinstance<py::str>(init)) {
          p.init = fk::parse_init(init.cast<std::string>());
          if (p.init == fk::InitMethod::given)
            throw py::value_error("init='given' needs the centroids: pass init=[array per problem]");
        } else {
          if (!py::isinstance<py::list>(init) && !py::isinstance<py::tuple>(init))
            throw py::type_error("init must be 'k-means++', 'k-means||', 'random' or a list of arrays [K_b x D]");
          p.init = fk::InitMethod::given;
          for (const py::handle h : init) {
            auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(h);
            if (!a) throw py::error_already_set();
            init_arrs.push_back(std::move(a));
          }
          if (init_arrs.size() != B)
            throw py::value_error("init has " + std::to_string(init_arrs.size()) + " arrays for " + std::to_string(B) +
                                  " problems");
          for (std::size_t b = 0; b < B; ++b) {
            const auto& a = init_arrs[b];
            const std::int64_t d = inputs[ragged ? 0 : b].view.cols;
            if (a.ndim() != 2 || a.shape(0) != k_of(b) || a.shape(1) != d)
              throw py::value_error("init of problem " + std::to_string(b) + " has shape " +
                                    py::str(py::object(a.attr("shape"))).cast<std::string>() + ", expected (" +
                                    std::to_string(k_of(b)) + ", " + std::to_string(d) + ")");
          }
        }
        // ---- weights: a list of 1D arrays (list form) or one [N] array (offsets form) ----
        std::vector<py::array_t<float, py::array::c_style | py::array::forcecast>> w_arrs;
        if (!sample_weight.is_none()) {
          std::vector<py::object> ws;
          if (ragged) ws.push_back(sample_weight);
          else {
            if (!py::isinstance<py::list>(sample_weight) && !py::isinstance<py::tuple>(sample_weight))
              throw py::type_error("sample_weight must be a list of 1D arrays (one per problem) or None");
            for (const py::handle h : sample_weight) ws.push_back(py::reinterpret_borrow<py::object>(h));
            if (ws.size() != B)
              throw py::value_error("sample_weight has " + std::to_string(ws.size()) + " arrays for " +
                                    std::to_string(B) + " problems");
          }
          for (std::size_t i = 0; i < ws.size(); ++i) {
            auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(ws[i]);
            if (!a) throw py::error_already_set();
            const std::int64_t want = ragged ? inputs[0].view.rows : inputs[i].view.rows;
            if (a.ndim() != 1 || a.shape(0) != want)
              throw py::value_error("sample_weight" + (ragged ? std::string() : "[" + std::to_string(i) + "]") +
                                    " must be 1D of length " + std::to_string(want));
            w_arrs.push_back(std::move(a));
          }
        }
        // ---- outputs and the call ----
        Progress state{progress, std::nullopt};
        p.progress = make_progress(state);
        std::vector<fk::Model> models;
        py::list labels;
        if (ragged) {
          const fk::MatrixView& x = inputs[0].view;
          py::array_t<std::int32_t> lab(x.rows);
          fk::RaggedBatch rb;
          rb.x = x;
          rb.offsets = off;
          rb.n_clusters = ks;
          rb.sample_weight = w_arrs.empty() ? nullptr : w_arrs[0].data();
          if (!init_arrs.empty()) {
            for (const auto& a : init_arrs) init_stack.insert(init_stack.end(), a.data(), a.data() + a.size());
            rb.init_centroids = init_stack.data();
          }
          rb.labels = lab.mutable_data();
          run_released(&state, [&] { models = fk::fit_batched(rb, p); });
          for (std::size_t b = 0; b < B; ++b)
            labels.append(lab[py::slice(static_cast<py::ssize_t>(off[b]), static_cast<py::ssize_t>(off[b + 1]), 1)]);
        } else {
          std::vector<fk::BatchedProblem> ps(B);
          std::vector<py::array_t<std::int32_t>> labs;
          for (std::size_t b = 0; b < B; ++b) {
            labs.emplace_back(inputs[b].view.rows);
            ps[b].x = inputs[b].view;
            ps[b].n_clusters = ks.empty() ? 0 : ks[b];
            ps[b].sample_weight = w_arrs.empty() ? nullptr : w_arrs[b].data();
            ps[b].init_centroids = init_arrs.empty() ? nullptr : init_arrs[b].data();
            ps[b].labels = labs.back().mutable_data();
          }
          run_released(&state, [&] { models = fk::fit_batched(std::span<const fk::BatchedProblem>(ps), p); });
          for (auto& l : labs) labels.append(std::move(l));
        }
        py::list out_models;
        for (auto& m2 : models) out_models.append(py::cast(std::move(m2)));
        return py::make_tuple(out_models, labels);
      },
      py::arg("X"), py::arg("offsets") = py::none(), py::arg("n_clusters") = 8, py::arg("init") = "k-means++",
      py::arg("max_iter") = 300, py::arg("tol") = 1e-4, py::arg("seed") = 0, py::arg("metric") = "l2",
      py::arg("device") = "cpu", py::arg("device_id") = 0, py::arg("precision") = "auto", py::arg("certify") = true,
      py::arg("n_threads") = 0, py::arg("sample_weight") = py::none(), py::arg("progress") = py::none(),
      "Fit B independent problems together: X a list of 2D arrays, or one 2D array with offsets [B + 1].\n"
      "Returns (list of Model, list of label arrays).");

  m.def(
      "predict",
      [](const fk::Model& model, const py::object& x, bool return_distances, const py::object& device, int device_id,
         int n_threads, const py::object& labels_out, const py::object& distances_out) -> py::object {
        Input in = to_input(x, "X");
        auto opt = predict_options(in, device, device_id, n_threads);
        Output labels = make_output<std::int32_t>(labels_out, in, {in.view.rows}, "labels_out");
        Output dist;
        if (return_distances || !distances_out.is_none()) dist = make_output<float>(distances_out, in, {in.view.rows}, "distances_out");
        run_released(nullptr, [&] {
          fk::predict(model, in.view, static_cast<std::int32_t*>(labels.data), static_cast<float*>(dist.data), opt);
        });
        if (return_distances) return py::make_tuple(labels.obj, dist.obj);
        return labels.obj;
      },
      py::arg("model"), py::arg("X"), py::arg("return_distances") = false, py::arg("device") = py::none(),
      py::arg("device_id") = 0, py::arg("n_threads") = 0, py::arg("labels_out") = py::none(),
      py::arg("distances_out") = py::none(),
      "Nearest centroid of every row: labels [N] int32 (and distances [N] float32 by the model's metric).");

  m.def(
      "transform",
      [](const fk::Model& model, const py::object& x, const py::object& device, int device_id, int n_threads,
         const py::object& out) {
        Input in = to_input(x, "X");
        auto opt = predict_options(in, device, device_id, n_threads);
        Output o = make_output<float>(out, in, {in.view.rows, model.n_clusters}, "out");
        run_released(nullptr, [&] { fk::transform(model, in.view, static_cast<float*>(o.data), opt); });
        return o.obj;
      },
      py::arg("model"), py::arg("X"), py::arg("device") = py::none(), py::arg("device_id") = 0,
      py::arg("n_threads") = 0, py::arg("out") = py::none(),
      "Distances of every row to every centroid [N x K] float32 (Euclidean for l2, as scikit-learn).");

  m.def(
      "score",
      [](const fk::Model& model, const py::object& x, const py::object& sample_weight, const py::object& device,
         int device_id, int n_threads) {
        Input in = to_input(x, "X");
        auto opt = predict_options(in, device, device_id, n_threads);
        Weights w;
        load_weights(w, sample_weight, in);
        double s = 0;
        run_released(nullptr, [&] { s = fk::score(model, in.view, w.data, opt); });
        return s;
      },
      py::arg("model"), py::arg("X"), py::arg("sample_weight") = py::none(), py::arg("device") = py::none(),
      py::arg("device_id") = 0, py::arg("n_threads") = 0, "Minus the weighted inertia of X under the model.");

  m.def("device_available", [](const std::string& d) { return fk::device_available(fk::parse_device(d)); },
        py::arg("device"), "Whether a backend can run here: 'cpu' always; 'cuda' when built and a GPU is present.");
  m.def("cpu_simd_level", &fk::cpu_simd_level, "The CPU SIMD path chosen at run time ('avx512', 'avx2', 'generic').");
  m.def("version", &fk::version, "Library version string.");
#ifdef FLASHKM_WITH_CUDA
  m.attr("cuda_built") = true;
#else
  m.attr("cuda_built") = false;
#endif
  m.def("_debug_last_input_ptr", [] { return g_last_input_ptr; },
        "Data pointer of the last input matrix handed to the core (for zero-copy tests).");
  m.def("_debug_input_ptr", [](const py::object& x) {
        Input in = to_input(x, "X");
        return reinterpret_cast<std::uintptr_t>(in.view.data);
      }, "Data pointer the binding would hand to the core for X (for zero-copy tests).");
}
