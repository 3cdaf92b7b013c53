// Data readers and writers: .npy (every accepted dtype and version, every rejection),
// .fvecs/.bvecs, load_matrix, atomic writes.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "flashkm/error.hpp"
#include "io/atomic_file.hpp"
#include "io/matrix.hpp"
#include "io/npy.hpp"
#include "io/vecs.hpp"
#include "support/io_fixtures.hpp"

namespace flashkm {
namespace {

using test::make_npy;
using test::TempDir;
using test::write_bytes;

// Run f, expect Error of `kind` whose message contains `needle`.
template <class F>
void expect_error(F&& f, ErrorKind kind, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

std::string dict(const std::string& descr, const std::string& shape, bool fortran = false) {
  return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': " + shape + ", }";
}

template <class T>
void check_npy_round_trip(const char* descr, DType dtype, int major) {
  TempDir dir;
  std::vector<T> data(3 * 4);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<T>(i * 3 + 1);
  const std::string path = dir.file("a.npy");
  write_bytes(path, make_npy(dict(descr, "(3, 4)"), data.data(), data.size() * sizeof(T), major));
  const io::LoadedMatrix m = io::load_npy(path);
  EXPECT_EQ(m.view.dtype, dtype);
  EXPECT_EQ(m.view.rows, 3);
  EXPECT_EQ(m.view.cols, 4);
  EXPECT_EQ(m.view.stride(), 4);
  EXPECT_EQ(m.format, "npy");
  EXPECT_EQ(std::memcmp(m.view.data, data.data(), data.size() * sizeof(T)), 0);
}

TEST(Npy, ReadsEveryFloatDtypeAndVersion) {
  for (int major : {1, 2, 3}) {
    SCOPED_TRACE(major);
    check_npy_round_trip<float>("<f4", DType::f32, major);
    check_npy_round_trip<double>("<f8", DType::f64, major);
    check_npy_round_trip<std::uint16_t>("<f2", DType::f16, major);  // fp16 as raw 16-bit words
  }
}

TEST(Npy, ReadIsZeroCopyAndKeepsTheMappingAlive) {
  TempDir dir;
  const float data[2][2] = {{1, 2}, {3, 4}};
  write_bytes(dir.file("a.npy"), make_npy(dict("<f4", "(2, 2)"), data, sizeof data));
  const auto bytes = test::read_bytes(dir.file("a.npy"));
  const std::size_t offset = io::parse_npy_header(bytes.data(), bytes.size(), "a.npy").data_offset;
  io::LoadedMatrix copy;
  {
    const io::LoadedMatrix m = io::load_npy(dir.file("a.npy"));
    // The data pointer lies just past the header in the page-aligned mapping, not in a copy.
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(m.view.data) % 4096, offset);
    copy = m;
  }
  EXPECT_EQ(static_cast<const float*>(copy.view.data)[3], 4.0f);
}

// A rank's shard of a distributed fit: a zero-copy view of its rows that keeps the mapping.
TEST(Npy, RowRangeIsAViewOfTheRows) {
  TempDir dir;
  std::vector<double> data(5 * 3);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = double(i);
  write_bytes(dir.file("a.npy"), make_npy(dict("<f8", "(5, 3)"), data.data(), data.size() * sizeof(double)));
  io::LoadedMatrix part;
  {
    const io::LoadedMatrix m = io::load_npy(dir.file("a.npy"));
    part = io::row_range(m, 2, 2);
    EXPECT_EQ(part.view.data, m.view.row(2));
    EXPECT_EQ(io::row_range(m, 5, 0).view.rows, 0);
    expect_error([&] { io::row_range(m, 4, 2); }, ErrorKind::invalid_argument, "rows [4, 6) are not inside the 5 rows");
  }
  EXPECT_EQ(part.view.rows, 2);
  EXPECT_EQ(part.view.cols, 3);
  EXPECT_EQ(part.view.dtype, DType::f64);
  EXPECT_EQ(static_cast<const double*>(part.view.data)[0], 6.0);
  EXPECT_EQ(static_cast<const double*>(part.view.data)[5], 11.0);
}

TEST(Npy, HeaderVariants) {
  TempDir dir;
  const float data[3] = {1, 2, 3};
  // Double quotes, no trailing comma, other key order, extra spaces: all valid Python.
  write_bytes(dir.file("a.npy"),
              make_npy("{\"shape\": ( 1 ,3 ), \"fortran_order\":False, \"descr\": \"<f4\"}", data, sizeof data));
  const auto m = io::load_npy(dir.file("a.npy"));
  EXPECT_EQ(m.view.rows, 1);
  EXPECT_EQ(m.view.cols, 3);
  // An empty matrix is readable; fit() judges it.
  write_bytes(dir.file("e.npy"), make_npy(dict("<f4", "(0, 5)"), nullptr, 0));
  EXPECT_EQ(io::load_npy(dir.file("e.npy")).view.rows, 0);
}

TEST(Npy, VectorOnlyWhenAskedFor) {
  TempDir dir;
  const float data[3] = {1, 2, 3};
  write_bytes(dir.file("v.npy"), make_npy(dict("<f4", "(3,)"), data, sizeof data));
  expect_error([&] { io::load_npy(dir.file("v.npy")); }, ErrorKind::unsupported_type, "found shape (3,)");
  const auto v = io::load_npy(dir.file("v.npy"), io::NpyRank::vector);
  EXPECT_EQ(v.view.rows, 3);
  EXPECT_EQ(v.view.cols, 1);
  write_bytes(dir.file("m.npy"), make_npy(dict("<f4", "(3, 1)"), data, sizeof data));
  expect_error([&] { io::load_npy(dir.file("m.npy"), io::NpyRank::vector); }, ErrorKind::unsupported_type,
               "expected a 1-D array");
}

TEST(Npy, RejectsUnsupportedLayoutsAndTypes) {
  TempDir dir;
  const std::vector<std::uint8_t> zeros(64, 0);
  auto try_dict = [&](const std::string& d, std::size_t bytes, const std::string& needle) {
    SCOPED_TRACE(d);
    write_bytes(dir.file("x.npy"), make_npy(d, zeros.data(), bytes));
    expect_error([&] { io::load_npy(dir.file("x.npy")); }, ErrorKind::unsupported_type, needle);
  };
  try_dict(dict("<f4", "(2, 3)", true), 24, "Fortran-order");
  try_dict(dict("<i4", "(2, 3)"), 24, "'<i4' (int32)");
  try_dict(dict("<i8", "(2, 2)"), 32, "int64");
  try_dict(dict("|u1", "(2, 3)"), 6, "uint8");
  try_dict(dict("<c8", "(2, 2)"), 32, "complex64");
  try_dict(dict(">f4", "(2, 3)"), 24, "big-endian float32");
  try_dict(dict("|O", "(2, 2)"), 32, "object");
  try_dict("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8, "structured");
  try_dict(dict("<f4", "(2, 2, 2)"), 32, "found shape (2, 2, 2)");
  try_dict(dict("<f4", "()"), 4, "found shape ()");
}

TEST(Npy, RejectsMalformedAndTruncatedFiles) {
  TempDir dir;
  const float data[6] = {1, 2, 3, 4, 5, 6};
  const auto good = make_npy(dict("<f4", "(2, 3)"), data, sizeof data);
  auto expect_format = [&](const std::vector<std::uint8_t>& bytes, const std::string& needle) {
    write_bytes(dir.file("x.npy"), bytes);
    expect_error([&] { io::load_npy(dir.file("x.npy")); }, ErrorKind::format, needle);
  };
  // Truncated inside the magic, the length field, the header text, the data.
  for (std::size_t n : {0, 4, 9, 30, 63}) expect_format({good.begin(), good.begin() + n}, n < 6 ? "bad magic" : "truncated");
  expect_format({good.begin(), good.end() - 1}, "truncated .npy data");
  expect_format({good.begin(), good.end() - 24}, "needs 24 bytes, the file holds 0");
  auto longer = good;
  longer.push_back(0);
  expect_format(longer, "unexpected bytes");
  auto v4 = good;
  v4[6] = 4;
  expect_format(v4, "version 4.0 is not supported");
  expect_format(make_npy("{'descr': '<f4', 'fortran_order': False}", data, 0), "missing");
  expect_format(make_npy("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}", data, 4), "True or False");
  expect_format(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", data, 4),
                "unexpected key 'x'");
  expect_format(make_npy(dict("<f4", "(-1, 3)"), data, 4), "expected a dimension");
  expect_format(make_npy(dict("<f4", "(4294967296, 4294967296, 4294967296)"), data, 4), "too large");
  expect_format(make_npy("{'descr': '<f4", data, 0), "unterminated");
}

TEST(Npy, MisalignedDataIsCopied) {
  // A hand-made header whose data starts at an offset that is not a multiple of 8.
  TempDir dir;
  const double data[2] = {1.5, -2.5};
  const std::string d = dict("<f8", "(1, 2)") + "\n";
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8) + char(d.size()) + '\0' + d;
  ASSERT_NE(bytes.size() % 8, 0u);
  bytes.append(reinterpret_cast<const char*>(data), sizeof data);
  write_bytes(dir.file("a.npy"), bytes.data(), bytes.size());
  const auto m = io::load_npy(dir.file("a.npy"));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(m.view.data) % 8, 0u);
  EXPECT_EQ(static_cast<const double*>(m.view.data)[1], -2.5);
}

TEST(Npy, WriterOutputIsReadableAndAligned) {
  TempDir dir;
  const float c[2][3] = {{1, 2, 3}, {4, 5, 6}};
  io::save_npy(dir.file("c.npy"), &c[0][0], {2, 3});
  const auto m = io::load_npy(dir.file("c.npy"));
  EXPECT_EQ(m.view.rows, 2);
  EXPECT_EQ(m.view.cols, 3);
  EXPECT_EQ(std::memcmp(m.view.data, c, sizeof c), 0);

  const std::int32_t labels[4] = {0, 3, 1, -1};
  io::save_npy(dir.file("l.npy"), labels, {4});
  const auto bytes = test::read_bytes(dir.file("l.npy"));
  const io::NpyHeader h = io::parse_npy_header(bytes.data(), bytes.size(), "l.npy");
  EXPECT_EQ(h.descr, "<i4");
  EXPECT_EQ(h.shape, std::vector<std::int64_t>{4});
  EXPECT_EQ(h.major, 1);
  EXPECT_EQ(h.data_offset % 64, 0u);
  EXPECT_EQ(std::memcmp(bytes.data() + h.data_offset, labels, sizeof labels), 0);

  const float dist[2] = {0.5f, 0.25f};
  io::save_npy(dir.file("d.npy"), dist, {2});
  const auto v = io::load_npy(dir.file("d.npy"), io::NpyRank::vector);
  EXPECT_EQ(static_cast<const float*>(v.view.data)[1], 0.25f);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"c.npy", "d.npy", "l.npy"}));
}

TEST(AtomicFile, UncommittedWriteLeavesNothing) {
  TempDir dir;
  {
    io::AtomicFile f(dir.file("out.npy"));
    f.write("abc", 3);
    EXPECT_EQ(dir.entries().size(), 1u);  // the hidden temporary file
  }
  EXPECT_TRUE(dir.entries().empty());
  expect_error([&] { io::AtomicFile f(dir.file("no/such/dir.npy")); }, ErrorKind::io, "no/such/dir.npy");
  expect_error([&] { io::AtomicFile f(dir.path()); }, ErrorKind::io, "is a directory");
  EXPECT_TRUE(dir.entries().empty());
}

std::vector<std::uint8_t> vecs_bytes(const std::vector<std::vector<float>>& rows, bool bytes_elems) {
  std::vector<std::uint8_t> out;
  for (const auto& r : rows) {
    const std::int32_t d = static_cast<std::int32_t>(r.size());
    const auto* dp = reinterpret_cast<const std::uint8_t*>(&d);
    out.insert(out.end(), dp, dp + 4);
    for (float x : r) {
      if (bytes_elems) {
        out.push_back(static_cast<std::uint8_t>(x));
      } else {
        const auto* xp = reinterpret_cast<const std::uint8_t*>(&x);
        out.insert(out.end(), xp, xp + 4);
      }
    }
  }
  return out;
}

TEST(Vecs, FvecsIsAStridedZeroCopyView) {
  TempDir dir;
  write_bytes(dir.file("a.fvecs"), vecs_bytes({{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}, false));
  const auto m = io::load_matrix(dir.file("a.fvecs"));
  EXPECT_EQ(m.format, "fvecs");
  EXPECT_EQ(m.view.dtype, DType::f32);
  EXPECT_EQ(m.view.rows, 3);
  EXPECT_EQ(m.view.cols, 3);
  EXPECT_EQ(m.view.stride(), 4);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(static_cast<const float*>(m.view.row(i))[j], float(3 * i + j + 1));
}

TEST(Vecs, BvecsIsConvertedToFloat) {
  TempDir dir;
  write_bytes(dir.file("a.bvecs"), vecs_bytes({{0, 255}, {7, 8}}, true));
  const auto m = io::load_matrix(dir.file("a.bvecs"));
  EXPECT_EQ(m.file_dtype, "uint8");
  EXPECT_EQ(m.view.dtype, DType::f32);
  EXPECT_EQ(m.view.rows, 2);
  EXPECT_EQ(m.view.cols, 2);
  const auto* p = static_cast<const float*>(m.view.data);
  EXPECT_EQ(p[1], 255.0f);
  EXPECT_EQ(p[2], 7.0f);
}

TEST(Vecs, BrokenFilesAreFormatErrors) {
  TempDir dir;
  auto expect_format = [&](const char* name, const std::vector<std::uint8_t>& bytes, const std::string& needle) {
    write_bytes(dir.file(name), bytes);
    expect_error([&] { io::load_matrix(dir.file(name)); }, ErrorKind::format, needle);
  };
  auto good = vecs_bytes({{1, 2}, {3, 4}}, false);
  expect_format("e.fvecs", {}, "empty");
  expect_format("t.fvecs", {good.begin(), good.end() - 1}, "not a multiple");
  expect_format("d.fvecs", vecs_bytes({{1, 2, 3, 4, 5}, {1}, {1, 2, 3}}, false), "record 1 has dimension 1");
  std::vector<std::uint8_t> neg = {0xFF, 0xFF, 0xFF, 0xFF};
  expect_format("n.fvecs", neg, "invalid dimension -1");
  auto gb = vecs_bytes({{1, 2, 3}, {4, 5, 6}}, true);
  expect_format("t.bvecs", {gb.begin(), gb.end() - 2}, "not a multiple");
  expect_format("d.bvecs", vecs_bytes({{1, 2, 3, 4, 5, 6}, {1}, {1, 2, 3, 4, 5, 6}}, true), "dimension");
}

TEST(LoadMatrix, DispatchAndErrors) {
  TempDir dir;
  expect_error([&] { io::load_matrix(dir.file("a.csv")); }, ErrorKind::unsupported_type, "unknown data file type");
  expect_error([&] { io::load_matrix(dir.file("missing.npy")); }, ErrorKind::io, "missing.npy");
  ::mkdir(dir.file("d.npy").c_str(), 0755);
  expect_error([&] { io::load_matrix(dir.file("d.npy")); }, ErrorKind::io, "is a directory");
}

}  // namespace
}  // namespace flashkm
