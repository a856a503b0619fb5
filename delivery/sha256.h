// Incremental SHA-256 (OpenSSL 3's EVP interface), for hashing what is
// read or written piece by piece.
#ifndef EDGESPLIT_DELIVERY_SHA256_H_
#define EDGESPLIT_DELIVERY_SHA256_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "openssl/evp.h"

namespace edgesplit {

// Thread-compatible.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr);
  }
  void Update(absl::string_view bytes) {
    EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size());
  }
  // The digest, lowercase hex; call once.
  std::string Hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_.get(), digest, &n);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < n; ++i) {
      out += kHex[digest[i] >> 4];
      out += kHex[digest[i] & 15];
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

// SHA-256 of the file at `path`, read in 1 MiB pieces, each also passed to
// `sink` when given (so a copy and its check take one read). NOT_FOUND
// when it cannot be opened.
absl::StatusOr<std::string> Sha256OfFile(
    const std::string& path,
    const std::function<void(absl::string_view)>& sink = nullptr);

}  // namespace edgesplit

#endif  // EDGESPLIT_DELIVERY_SHA256_H_
