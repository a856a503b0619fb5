// Test helper: writes GGUF files from known values, following the format
// description (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md)
// independently of runtime/gguf.cc, so that tests check the reader against
// a second implementation.
#ifndef EDGESPLIT_TESTING_GGUF_WRITER_H_
#define EDGESPLIT_TESTING_GGUF_WRITER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace edgesplit {
namespace testing {

// Value types as GGUF numbers them: 4 u32, 5 i32, 6 f32, 7 bool, 8 string,
// 9 array. Tensors are laid out in call order at `alignment`.
class GgufWriter {
 public:
  void KvString(const std::string& key, const std::string& v) {
    Key(key, 8);
    Str(&kv_, v);
  }
  void KvU32(const std::string& key, uint32_t v) {
    Key(key, 4);
    Put(&kv_, v);
  }
  void KvF32(const std::string& key, float v) {
    Key(key, 6);
    Put(&kv_, v);
  }
  void KvBool(const std::string& key, bool v) {
    Key(key, 7);
    Put(&kv_, static_cast<uint8_t>(v));
  }
  void KvStrings(const std::string& key, const std::vector<std::string>& v) {
    Key(key, 9);
    Put(&kv_, uint32_t{8});
    Put(&kv_, static_cast<uint64_t>(v.size()));
    for (const std::string& s : v) Str(&kv_, s);
  }
  template <typename T>
  void KvArray(const std::string& key, uint32_t elem_type,
               const std::vector<T>& v) {
    Key(key, 9);
    Put(&kv_, elem_type);
    Put(&kv_, static_cast<uint64_t>(v.size()));
    for (const T& x : v) Put(&kv_, x);
  }
  // ne innermost first, as GGUF stores them.
  void Tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type,
              std::string bytes) {
    tensors_.push_back({name, std::move(ne), type, std::move(bytes)});
  }
  std::string Build(uint64_t alignment = 32) const {
    std::string out;
    Put(&out, uint32_t{0x46554747});
    Put(&out, uint32_t{3});
    Put(&out, static_cast<uint64_t>(tensors_.size()));
    Put(&out, n_kv_);
    out += kv_;
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const T& t : tensors_) {
      Str(&out, t.name);
      Put(&out, static_cast<uint32_t>(t.ne.size()));
      for (uint64_t n : t.ne) Put(&out, n);
      Put(&out, t.type);
      Put(&out, offset);
      offsets.push_back(offset);
      offset =
          (offset + t.bytes.size() + alignment - 1) / alignment * alignment;
    }
    out.resize((out.size() + alignment - 1) / alignment * alignment, '\0');
    const size_t data = out.size();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      out.resize(data + offsets[i], '\0');
      out += tensors_[i].bytes;
    }
    return out;
  }

 private:
  struct T {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::string bytes;
  };
  template <typename V>
  static void Put(std::string* out, V v) {
    out->append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  static void Str(std::string* out, const std::string& s) {
    Put(out, static_cast<uint64_t>(s.size()));
    *out += s;
  }
  void Key(const std::string& key, uint32_t type) {
    Str(&kv_, key);
    Put(&kv_, type);
    ++n_kv_;
  }
  std::string kv_;
  uint64_t n_kv_ = 0;
  std::vector<T> tensors_;
};

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTING_GGUF_WRITER_H_
