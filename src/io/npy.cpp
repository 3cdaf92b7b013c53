#include "io/npy.hpp"

#include <cctype>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>

#include "flashkm/error.hpp"
#include "io/byte_io.hpp"
#include "io/mapped_file.hpp"

namespace flashkm::io {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLen = 6;

// ---- header dict parser ------------------------------------------------------------------
// The header is a Python dict literal written by numpy, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// This parser accepts exactly that grammar (either quote style, any whitespace, an optional
// trailing comma) and nothing else: numpy itself rejects anything beyond these three keys.
class DictParser {
 public:
  DictParser(std::string_view text, const std::string& name) : s_(text), name_(name) {}

  NpyHeader parse() {
    NpyHeader h;
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    while (true) {
      skip_ws();
      if (peek() == '}') break;
      const std::string key = parse_string();
      expect(':');
      skip_ws();
      if (key == "descr") {
        // A list here is a structured dtype, which has no single element type.
        if (peek() == '[')
          FLASHKM_FAIL(unsupported_type, "cannot read '", name_,
                       "': structured dtypes are not supported (need float32, float16 or float64)");
        h.descr = parse_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        h.fortran_order = parse_bool();
        have_order = true;
      } else if (key == "shape") {
        h.shape = parse_shape();
        have_shape = true;
      } else {
        fail("unexpected key '" + key + "'");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != '}') fail("expected ',' or '}'");
    }
    ++pos_;
    if (!have_descr || !have_order || !have_shape) fail("missing one of 'descr', 'fortran_order', 'shape'");
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected text after the header dict");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    FLASHKM_FAIL(format, "cannot read '", name_, "': malformed .npy header (", what, " at character ", pos_, ")");
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  void expect(char c) {
    skip_ws();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  std::string parse_string() {
    skip_ws();
    const char q = peek();
    if (q != '\'' && q != '"') fail("expected a string");
    const auto end = s_.find(q, pos_ + 1);
    if (end == std::string_view::npos) fail("unterminated string");
    std::string out(s_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return out;
  }
  bool parse_bool() {
    for (const bool value : {true, false}) {
      const std::string_view word = value ? "True" : "False";
      if (s_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return value;
      }
    }
    fail("expected True or False");
  }
  std::vector<std::int64_t> parse_shape() {
    std::vector<std::int64_t> shape;
    expect('(');
    while (true) {
      skip_ws();
      if (peek() == ')') break;
      if (!std::isdigit(static_cast<unsigned char>(peek()))) fail("expected a dimension");
      std::int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        const int digit = s_[pos_++] - '0';
        if (v > (std::numeric_limits<std::int64_t>::max() - digit) / 10) fail("dimension too large");
        v = v * 10 + digit;
      }
      shape.push_back(v);
      skip_ws();
      if (peek() == ',') ++pos_;
      else if (peek() != ')') fail("expected ',' or ')'");
    }
    ++pos_;
    return shape;
  }

  std::string_view s_;
  const std::string& name_;
  std::size_t pos_ = 0;
};

// Item size of a simple dtype string such as "<f4" or "|u1"; 0 when not of that form.
std::size_t descr_item_size(const std::string& d) {
  if (d.size() < 3 || std::strchr("<>|=", d[0]) == nullptr || std::strchr("biufc", d[1]) == nullptr) return 0;
  std::size_t n = 0;
  for (std::size_t i = 2; i < d.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(d[i])) || n > 1024) return 0;
    n = n * 10 + static_cast<std::size_t>(d[i] - '0');
  }
  return n;
}

// Human name of a dtype string for messages: "'<i8' (int64)".
std::string describe_descr(const std::string& d) {
  std::string kind;
  const std::size_t item = descr_item_size(d);
  if (item > 0) {
    switch (d[1]) {
      case 'b': kind = "bool"; break;
      case 'i': kind = "int" + std::to_string(8 * item); break;
      case 'u': kind = "uint" + std::to_string(8 * item); break;
      case 'f': kind = "float" + std::to_string(8 * item); break;
      case 'c': kind = "complex" + std::to_string(8 * item); break;
    }
    if (d[0] == '>') kind = "big-endian " + kind;
  } else if (!d.empty() && d.find('O') != std::string::npos) {
    kind = "object";
  } else {
    kind = "non-numeric";
  }
  return "'" + d + "' (" + kind + ")";
}

// The element types flashkm reads: little-endian floats ("=" is native, i.e. little here).
bool dtype_from_descr(const std::string& d, DType* out) {
  if (d.size() != 3 || (d[0] != '<' && d[0] != '=') || d[1] != 'f') return false;
  switch (d[2]) {
    case '4': *out = DType::f32; return true;
    case '2': *out = DType::f16; return true;
    case '8': *out = DType::f64; return true;
  }
  return false;
}

std::string shape_string(std::span<const std::int64_t> shape) {
  std::ostringstream os;
  os << '(';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << (shape.size() == 1 ? ",)" : ")");
  return os.str();
}

}  // namespace

NpyHeader parse_npy_header(const std::uint8_t* bytes, std::size_t size, const std::string& name) {
  FLASHKM_CHECK(size >= kMagicLen && std::memcmp(bytes, kMagic, kMagicLen) == 0, format, "cannot read '", name,
                "': not a .npy file (bad magic)");
  FLASHKM_CHECK(size >= 10, format, "cannot read '", name, "': truncated .npy header (", size, " bytes)");
  const int major = bytes[6], minor = bytes[7];
  std::size_t len_bytes = 0;
  if (major == 1 && minor == 0) len_bytes = 2;
  else if ((major == 2 || major == 3) && minor == 0) len_bytes = 4;
  else FLASHKM_FAIL(format, "cannot read '", name, "': .npy format version ", major, ".", minor,
                    " is not supported (this build reads 1.0, 2.0 and 3.0)");
  FLASHKM_CHECK(size >= 8 + len_bytes, format, "cannot read '", name, "': truncated .npy header (", size, " bytes)");
  const std::size_t header_len = len_bytes == 2 ? load_le<std::uint16_t>(bytes + 8) : load_le<std::uint32_t>(bytes + 8);
  const std::size_t data_offset = 8 + len_bytes + header_len;
  FLASHKM_CHECK(data_offset <= size, format, "cannot read '", name, "': truncated .npy header (the header needs ",
                data_offset, " bytes, the file has ", size, ")");
  // Versions 1.0/2.0 are latin-1, 3.0 is UTF-8; the keys and values we accept are ASCII
  // either way, so the bytes are parsed as they are.
  std::string_view text(reinterpret_cast<const char*>(bytes + 8 + len_bytes), header_len);
  NpyHeader h = DictParser(text, name).parse();
  h.major = major;
  h.minor = minor;
  h.data_offset = data_offset;

  if (const std::size_t item = descr_item_size(h.descr); item > 0) {
    // Count the bytes with overflow checks: a corrupt shape must not wrap around.
    std::size_t need = item;
    for (std::int64_t dim : h.shape) {
      if (dim != 0 && need > std::numeric_limits<std::size_t>::max() / static_cast<std::size_t>(dim))
        FLASHKM_FAIL(format, "cannot read '", name, "': shape ", shape_string(h.shape), " is too large");
      need *= static_cast<std::size_t>(dim);
    }
    const std::size_t have = size - data_offset;
    FLASHKM_CHECK(have >= need, format, "cannot read '", name, "': truncated .npy data (shape ",
                  shape_string(h.shape), " of ", h.descr, " needs ", need, " bytes, the file holds ", have, ")");
    FLASHKM_CHECK(have == need, format, "cannot read '", name, "': ", have - need,
                  " unexpected bytes after the .npy data (shape ", shape_string(h.shape), ")");
  }
  return h;
}

LoadedMatrix load_npy(const std::string& path, NpyRank rank) {
  auto file = MappedFile::open(path);
  const NpyHeader h = parse_npy_header(file->data(), file->size(), path);

  DType dtype{};
  FLASHKM_CHECK(dtype_from_descr(h.descr, &dtype), unsupported_type, "cannot read '", path, "': dtype ",
                describe_descr(h.descr), " is not supported (need float32, float16 or float64, little-endian)");
  const std::size_t want_dims = rank == NpyRank::matrix ? 2 : 1;
  FLASHKM_CHECK(h.shape.size() == want_dims, unsupported_type, "cannot read '", path, "': expected a ", want_dims,
                "-D array, found shape ", shape_string(h.shape));
  // Fortran order of a 2-D array is its transpose in memory; silently transposing a large
  // mapped file would defeat zero copy, so ask for np.ascontiguousarray instead.
  FLASHKM_CHECK(!h.fortran_order || want_dims == 1, unsupported_type, "cannot read '", path,
                "': Fortran-order (column-major) arrays are not supported; save a C-order array "
                "(numpy.ascontiguousarray)");

  const std::int64_t rows = h.shape[0];
  const std::int64_t cols = want_dims == 2 ? h.shape[1] : 1;
  const std::size_t item = dtype_size(dtype);
  const std::uint8_t* data = file->data() + h.data_offset;
  LoadedMatrix m;
  m.format = "npy";
  m.file_dtype = to_string(dtype);
  if (h.data_offset % item == 0) {
    m.view = MatrixView::raw(data, dtype, rows, cols);
    m.view.mapped_file = true;
    m.storage = file;
  } else {
    // numpy pads headers to 64 bytes, so this is only hand-made files: copy to aligned memory
    // instead of handing out misaligned element pointers.
    const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols) * item;
    auto buf = std::make_shared<std::vector<double>>((n + sizeof(double) - 1) / sizeof(double));
    if (n > 0) std::memcpy(buf->data(), data, n);
    m.view = MatrixView::raw(buf->data(), dtype, rows, cols);
    m.storage = buf;
  }
  return m;
}

void write_npy_header(AtomicFile& out, const char* descr, std::span<const std::int64_t> shape) {
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " +
                     shape_string(shape) + ", }";
  // Pad with spaces and a final newline so that the data starts at a multiple of 64 bytes
  // (numpy's alignment). Version 2.0 only when the header outgrows 1.0's 16-bit length.
  const bool v2 = dict.size() + 1 + 10 > 65535;
  const std::size_t prefix = v2 ? 12 : 10;
  const std::size_t padded = (prefix + dict.size() + 1 + 63) / 64 * 64;
  dict.append(padded - prefix - dict.size() - 1, ' ');
  dict.push_back('\n');

  ByteWriter head(padded);
  head.put_bytes(kMagic, kMagicLen);
  head.put<std::uint8_t>(v2 ? 2 : 1);
  head.put<std::uint8_t>(0);
  if (v2) head.put(static_cast<std::uint32_t>(dict.size()));
  else head.put(static_cast<std::uint16_t>(dict.size()));
  head.put_bytes(dict.data(), dict.size());
  out.write(head.data(), head.size());
}

void write_npy(AtomicFile& out, const char* descr, std::size_t item_size, const void* data,
               std::span<const std::int64_t> shape) {
  write_npy_header(out, descr, shape);
  std::size_t n = item_size;
  for (std::int64_t dim : shape) {
    FLASHKM_ASSERT(dim >= 0, "negative dimension");
    n *= static_cast<std::size_t>(dim);
  }
  out.write(data, n);
}

}  // namespace flashkm::io
