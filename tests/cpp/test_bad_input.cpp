// Bad input: a flashkm::Error of the right kind with a message that says what is wrong,
// never a crash, and outputs left untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "flashkm/flashkm.hpp"
#include "support/reference.hpp"

namespace flashkm {
namespace {

template <class Fn>
void expect_error(Fn&& fn, ErrorKind kind, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << "message: " << e.what();
  }
}

struct Data {
  std::int64_t n = 50, d = 4;
  std::vector<float> x = testing::uniform(50, 4, 31);
  MatrixView view() const { return MatrixView::of(x.data(), n, d); }
};

Params params(std::int64_t k) {
  Params p;
  p.n_clusters = k;
  return p;
}

TEST(BadInput, NanAndInfNameTheFirstBadRow) {
  Data data;
  data.x[17 * 4 + 2] = std::numeric_limits<float>::quiet_NaN();
  data.x[30 * 4 + 0] = std::numeric_limits<float>::infinity();
  expect_error([&] { fit(data.view(), params(3)); }, ErrorKind::invalid_argument, "row 17, column 2");
  data.x[17 * 4 + 2] = 0;
  expect_error([&] { fit(data.view(), params(3)); }, ErrorKind::invalid_argument, "row 30, column 0");
}

TEST(BadInput, EmptyShapes) {
  Data data;
  expect_error([&] { fit(MatrixView::of(data.x.data(), 0, 4), params(1)); }, ErrorKind::invalid_argument, "0 samples");
  expect_error([&] { fit(MatrixView::of(data.x.data(), 5, 0), params(1)); }, ErrorKind::invalid_argument, "0 features");
  expect_error([&] { fit(MatrixView::of(static_cast<const float*>(nullptr), 5, 4), params(1)); },
               ErrorKind::invalid_argument, "null");
  expect_error([&] { fit(MatrixView::of(data.x.data(), 5, 4, 3), params(1)); }, ErrorKind::invalid_argument,
               "row_stride");
}

TEST(BadInput, ClusterCount) {
  Data data;
  expect_error([&] { fit(data.view(), params(0)); }, ErrorKind::invalid_argument, "n_clusters must be >= 1");
  expect_error([&] { fit(data.view(), params(-3)); }, ErrorKind::invalid_argument, "n_clusters must be >= 1");
  expect_error([&] { fit(data.view(), params(51)); }, ErrorKind::invalid_argument, "n_samples=50 should be >= n_clusters=51");
}

TEST(BadInput, OtherParameters) {
  Data data;
  Params p = params(2);
  p.max_iter = 0;
  expect_error([&] { fit(data.view(), p); }, ErrorKind::invalid_argument, "max_iter");
  p = params(2);
  p.tol = -1;
  expect_error([&] { fit(data.view(), p); }, ErrorKind::invalid_argument, "tol");
  p = params(2);
  p.tol = std::numeric_limits<double>::quiet_NaN();
  expect_error([&] { fit(data.view(), p); }, ErrorKind::invalid_argument, "tol");
  p = params(2);
  p.n_init = 0;
  expect_error([&] { fit(data.view(), p); }, ErrorKind::invalid_argument, "n_init");
  p = params(2);
  p.init = InitMethod::given;
  expect_error([&] { fit(data.view(), p); }, ErrorKind::invalid_argument, "init_centroids");
}

TEST(BadInput, Weights) {
  Data data;
  std::vector<float> w(data.n, 1.0f);
  FitArgs a;
  a.sample_weight = w.data();
  w[9] = -1.0f;
  expect_error([&] { fit(data.view(), params(2), a); }, ErrorKind::invalid_argument, "row 9");
  w[9] = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { fit(data.view(), params(2), a); }, ErrorKind::invalid_argument, "row 9");
  std::fill(w.begin(), w.end(), 0.0f);
  expect_error([&] { fit(data.view(), params(2), a); }, ErrorKind::invalid_argument, "sums to zero");
}

TEST(BadInput, GivenInitWithNaN) {
  Data data;
  std::vector<float> c(3 * 4, 0.5f);
  c[5] = std::numeric_limits<float>::infinity();
  Params p = params(3);
  p.init = InitMethod::given;
  FitArgs a;
  a.init_centroids = c.data();
  expect_error([&] { fit(data.view(), p, a); }, ErrorKind::invalid_argument, "row 1, column 1");
}

TEST(BadInput, CosineZeroRow) {
  Data data;
  std::fill(data.x.begin() + 8, data.x.begin() + 12, 0.0f);  // row 2
  Params p = params(2);
  p.metric = Metric::cosine;
  expect_error([&] { fit(data.view(), p); }, ErrorKind::invalid_argument, "row 2 is all zeros");
}

TEST(BadInput, PredictWithWrongFeaturesOrUnfittedModel) {
  Data data;
  const Model m = fit(data.view(), params(3));
  std::vector<float> other(50 * 5, 0.1f);
  std::vector<std::int32_t> labels(50, -7);
  expect_error([&] { predict(m, MatrixView::of(other.data(), 50, 5), labels.data()); }, ErrorKind::invalid_argument,
               "X has 5 features, but the model was fitted with 4 features");
  for (auto l : labels) EXPECT_EQ(l, -7) << "outputs must stay untouched on error";
  expect_error([&] { predict(Model{}, data.view(), labels.data()); }, ErrorKind::invalid_argument, "not fitted");
  std::vector<float> nan_rows = data.x;
  nan_rows[3] = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { predict(m, MatrixView::of(nan_rows.data(), 50, 4), labels.data()); }, ErrorKind::invalid_argument,
               "row 0, column 3");
  for (auto l : labels) EXPECT_EQ(l, -7);
}

TEST(BadInput, UnsupportedDtypeCode) {
  Data data;
  MatrixView v = data.view();
  v.dtype = static_cast<DType>(9);
  expect_error([&] { fit(v, params(2)); }, ErrorKind::unsupported_type, "dtype");
}

TEST(BadInput, CudaWithoutCudaIsAnErrorNotAFallback) {
  if (device_available(Device::cuda)) GTEST_SKIP() << "a CUDA device is present here";
  Data data;
  Params p = params(2);
  p.device = Device::cuda;
  expect_error([&] { fit(data.view(), p); }, ErrorKind::device_unavailable, "cuda");
}

TEST(BadInput, CpuDeviceWithDevicePointerIsAnError) {
  Data data;
  MatrixView v = data.view();
  v.where = Location::cuda;
  expect_error([&] { fit(v, params(2)); }, ErrorKind::invalid_argument, "host memory");
}

TEST(BadInput, UnknownNames) {
  expect_error([] { parse_metric("manhattan"); }, ErrorKind::invalid_argument, "manhattan");
  expect_error([] { parse_init("kmeans+++"); }, ErrorKind::invalid_argument, "kmeans+++");
  expect_error([] { parse_device("tpu"); }, ErrorKind::invalid_argument, "tpu");
  expect_error([] { parse_precision("fp8"); }, ErrorKind::invalid_argument, "fp8");
}

}  // namespace
}  // namespace flashkm
