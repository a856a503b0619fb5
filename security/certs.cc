#include "security/certs.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "security/grant.h"

namespace edgesplit {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using CrlPtr = std::unique_ptr<X509_CRL, Deleter<X509_CRL, X509_CRL_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using TimePtr = std::unique_ptr<ASN1_TIME, Deleter<ASN1_TIME, ASN1_TIME_free>>;

// OpenSSL's error queue, drained into one status.
absl::Status SslError(const std::string& what) {
  std::string detail;
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    absl::StrAppend(&detail, detail.empty() ? "" : "; ", buf);
  }
  return absl::InternalError(
      absl::StrCat(what, detail.empty() ? "" : ": ", detail));
}

absl::StatusOr<X509Ptr> ReadCert(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM certificate");
  }
  return cert;
}

absl::StatusOr<KeyPtr> ReadKey(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM private key");
  }
  return key;
}

std::string BioString(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

absl::Status AddExtension(X509* cert, X509V3_CTX* ctx, int nid,
                          const std::string& value) {
  X509_EXTENSION* ext =
      X509V3_EXT_conf_nid(nullptr, ctx, nid, const_cast<char*>(value.c_str()));
  if (ext == nullptr) return SslError(absl::StrCat("extension ", value));
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok ? absl::OkStatus() : SslError("X509_add_ext");
}

// A certificate for `subject_key`, named `cn`, signed by `issuer` (null:
// self-signed) with `signer`; `extensions` are (nid, value) in order.
absl::StatusOr<X509Ptr> MakeCert(
    EVP_PKEY* subject_key, const std::string& cn, X509* issuer,
    EVP_PKEY* signer, const Validity& validity,
    const std::vector<std::pair<int, std::string>>& extensions) {
  X509Ptr cert(X509_new());
  if (!cert || !X509_set_version(cert.get(), 2)) return SslError("X509_new");
  BnPtr serial(BN_new());
  // 127 random bits: positive, unique without a serial database.
  if (!BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
      !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()))) {
    return SslError("serial");
  }
  if (!ASN1_TIME_set(X509_getm_notBefore(cert.get()),
                     absl::ToTimeT(validity.not_before)) ||
      !ASN1_TIME_set(X509_getm_notAfter(cert.get()),
                     absl::ToTimeT(validity.not_after))) {
    return SslError("validity");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(
      name, "O", MBSTRING_ASC,
      reinterpret_cast<const unsigned char*>("edgesplit"), -1, -1, 0);
  if (!X509_NAME_add_entry_by_txt(
          name, "CN", MBSTRING_ASC,
          reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0)) {
    return SslError("subject");
  }
  if (!X509_set_issuer_name(cert.get(), issuer != nullptr
                                            ? X509_get_subject_name(issuer)
                                            : name) ||
      !X509_set_pubkey(cert.get(), subject_key)) {
    return SslError("issuer/public key");
  }
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : cert.get(), cert.get(),
                 nullptr, nullptr, 0);
  for (const auto& [nid, value] : extensions) {
    ES_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, nid, value));
  }
  if (X509_sign(cert.get(), signer, EVP_sha256()) == 0) {
    return SslError("X509_sign");
  }
  return cert;
}

absl::StatusOr<KeyAndCert> ToPem(EVP_PKEY* key, X509* cert) {
  BioPtr kb(BIO_new(BIO_s_mem())), cb(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(kb.get(), key, nullptr, nullptr, 0, nullptr,
                                nullptr) ||
      !PEM_write_bio_X509(cb.get(), cert)) {
    return SslError("PEM write");
  }
  return KeyAndCert{BioString(kb.get()), BioString(cb.get())};
}

absl::StatusOr<KeyPtr> NewKey() {
  KeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return SslError("EC key generation");
  return key;
}

absl::Status WritePair(const std::string& dir, const std::string& stem,
                       const KeyAndCert& kc, bool overwrite) {
  const std::string key = absl::StrCat(dir, "/", stem, ".key");
  const std::string cert = absl::StrCat(dir, "/", stem, ".pem");
  struct stat st;
  if (!overwrite &&
      (stat(key.c_str(), &st) == 0 || stat(cert.c_str(), &st) == 0)) {
    return absl::AlreadyExistsError(absl::StrCat(
        cert, " or ", key, " exists (pass --force to replace it)"));
  }
  ES_RETURN_IF_ERROR(WriteFileAtomically(key, kc.key_pem, 0600));
  return WriteFileAtomically(cert, kc.cert_pem, 0644);
}

}  // namespace

Validity ValidFor(int days) {
  const absl::Time now = absl::Now();
  return Validity{now - absl::Hours(1), now + absl::Hours(24) * days};
}

absl::StatusOr<KeyAndCert> CreateCa(const std::string& cluster,
                                    const Validity& validity) {
  ES_RETURN_IF_ERROR(CheckIdentityName("cluster", cluster));
  ES_ASSIGN_OR_RETURN(KeyPtr key, NewKey());
  ES_ASSIGN_OR_RETURN(
      X509Ptr cert,
      MakeCert(key.get(), absl::StrCat("edgesplit ", cluster, " CA"), nullptr,
               key.get(), validity,
               {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                {NID_key_usage, "critical,keyCertSign,cRLSign"},
                {NID_subject_key_identifier, "hash"}}));
  return ToPem(key.get(), cert.get());
}

absl::StatusOr<KeyAndCert> IssueCertificate(const KeyAndCert& ca,
                                            const Identity& id,
                                            const Validity& validity) {
  ES_RETURN_IF_ERROR(CheckIdentityName("cluster", id.cluster));
  if (id.kind != Identity::Kind::kController) {
    ES_RETURN_IF_ERROR(CheckIdentityName("name", id.name));
  }
  ES_ASSIGN_OR_RETURN(X509Ptr ca_cert, ReadCert(ca.cert_pem));
  ES_ASSIGN_OR_RETURN(KeyPtr ca_key, ReadKey(ca.key_pem));
  ES_ASSIGN_OR_RETURN(KeyPtr key, NewKey());
  ES_ASSIGN_OR_RETURN(
      X509Ptr cert,
      MakeCert(key.get(), id.ToString(), ca_cert.get(), ca_key.get(), validity,
               {{NID_basic_constraints, "critical,CA:FALSE"},
                {NID_key_usage, "critical,digitalSignature,keyAgreement"},
                {NID_ext_key_usage, "serverAuth,clientAuth"},
                {NID_subject_alt_name,
                 absl::StrCat("URI:", id.SpiffeId(), ",DNS:", id.DnsName())},
                {NID_subject_key_identifier, "hash"},
                {NID_authority_key_identifier, "keyid:always"}}));
  return ToPem(key.get(), cert.get());
}

absl::StatusOr<std::string> CreateCrl(const KeyAndCert& ca,
                                      const std::vector<std::string>& revoked,
                                      int days) {
  ES_ASSIGN_OR_RETURN(X509Ptr ca_cert, ReadCert(ca.cert_pem));
  ES_ASSIGN_OR_RETURN(KeyPtr ca_key, ReadKey(ca.key_pem));
  CrlPtr crl(X509_CRL_new());
  TimePtr now(ASN1_TIME_set(nullptr, absl::ToTimeT(absl::Now())));
  TimePtr next(ASN1_TIME_set(
      nullptr, absl::ToTimeT(absl::Now() + absl::Hours(24) * days)));
  if (!crl || !X509_CRL_set_version(crl.get(), 1) ||
      !X509_CRL_set_issuer_name(crl.get(),
                                X509_get_subject_name(ca_cert.get())) ||
      !X509_CRL_set1_lastUpdate(crl.get(), now.get()) ||
      !X509_CRL_set1_nextUpdate(crl.get(), next.get())) {
    return SslError("CRL");
  }
  for (const std::string& pem : revoked) {
    ES_ASSIGN_OR_RETURN(X509Ptr cert, ReadCert(pem));
    X509_REVOKED* r = X509_REVOKED_new();
    if (r == nullptr ||
        !X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(cert.get())) ||
        !X509_REVOKED_set_revocationDate(r, now.get()) ||
        !X509_CRL_add0_revoked(crl.get(), r)) {
      X509_REVOKED_free(r);
      return SslError("CRL entry");
    }
  }
  X509_CRL_sort(crl.get());
  if (X509_CRL_sign(crl.get(), ca_key.get(), EVP_sha256()) == 0) {
    return SslError("X509_CRL_sign");
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509_CRL(bio.get(), crl.get())) {
    return SslError("PEM write CRL");
  }
  return BioString(bio.get());
}

absl::StatusOr<std::string> CrlFileName(const std::string& ca_cert_pem) {
  ES_ASSIGN_OR_RETURN(X509Ptr cert, ReadCert(ca_cert_pem));
  int ok = 0;
  const unsigned long hash = X509_NAME_hash_ex(
      X509_get_subject_name(cert.get()), nullptr, nullptr, &ok);
  if (!ok) return SslError("X509_NAME_hash_ex");
  char name[32];
  std::snprintf(name, sizeof(name), "%08lx.r0", hash);
  return std::string(name);
}

absl::StatusOr<Identity> CertificateIdentity(const std::string& cert_pem) {
  ES_ASSIGN_OR_RETURN(X509Ptr cert, ReadCert(cert_pem));
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
  std::vector<std::string> uris;
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
    if (g->type != GEN_URI) continue;
    const ASN1_STRING* s = g->d.uniformResourceIdentifier;
    uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                      static_cast<size_t>(ASN1_STRING_length(s)));
  }
  GENERAL_NAMES_free(names);
  if (uris.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate has ", uris.size(),
                     " URI names; an edgesplit certificate has one "
                     "spiffe:// ID (made by `edgesplit certs`)"));
  }
  return ParseSpiffeId(uris[0]);
}

absl::StatusOr<std::string> CertificateSerial(const std::string& cert_pem) {
  ES_ASSIGN_OR_RETURN(X509Ptr cert, ReadCert(cert_pem));
  BnPtr bn(ASN1_INTEGER_to_BN(X509_get_serialNumber(cert.get()), nullptr));
  char* hex = bn ? BN_bn2hex(bn.get()) : nullptr;
  if (hex == nullptr) return SslError("serial");
  std::string out(hex);
  OPENSSL_free(hex);
  return out;
}

absl::StatusOr<Identity> CheckCertificate(const std::string& ca_pem,
                                          const std::string& cert_pem,
                                          const std::string& key_pem) {
  ES_ASSIGN_OR_RETURN(X509Ptr ca, ReadCert(ca_pem));
  ES_ASSIGN_OR_RETURN(X509Ptr cert, ReadCert(cert_pem));
  std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>> store(
      X509_STORE_new());
  std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>
      ctx(X509_STORE_CTX_new());
  if (!store || !ctx || !X509_STORE_add_cert(store.get(), ca.get()) ||
      !X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr)) {
    return SslError("X509_STORE");
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("certificate does not verify against the CA: ",
                     X509_verify_cert_error_string(err)));
  }
  if (!key_pem.empty()) {
    ES_ASSIGN_OR_RETURN(KeyPtr key, ReadKey(key_pem));
    if (X509_check_private_key(cert.get(), key.get()) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          "the private key does not match the certificate");
    }
  }
  return CertificateIdentity(cert_pem);
}

absl::StatusOr<std::string> CaCluster(const std::string& ca_cert_pem) {
  ES_ASSIGN_OR_RETURN(X509Ptr cert, ReadCert(ca_cert_pem));
  char cn[256] = {0};
  const int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()),
                                          NID_commonName, cn, sizeof(cn));
  const std::string s = n > 0 ? std::string(cn, static_cast<size_t>(n)) : "";
  constexpr char kPrefix[] = "edgesplit ", kSuffix[] = " CA";
  if (!absl::StartsWith(s, kPrefix) || !absl::EndsWith(s, kSuffix) ||
      s.size() <= sizeof(kPrefix) - 1 + sizeof(kSuffix) - 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CA common name \"", s, "\" is not \"edgesplit <cluster> CA\""));
  }
  return s.substr(sizeof(kPrefix) - 1,
                  s.size() - (sizeof(kPrefix) - 1) - (sizeof(kSuffix) - 1));
}

std::string CertFileStem(const Identity& id) {
  switch (id.kind) {
    case Identity::Kind::kController:
      return "controller";
    case Identity::Kind::kNode:
      return "node-" + id.name;
    case Identity::Kind::kDevice:
      return "device-" + id.name;
    case Identity::Kind::kAdmin:
      return "admin-" + id.name;
  }
  return "unknown";
}

absl::Status WriteClusterCerts(const ClusterCertsSpec& spec,
                               const std::string& dir) {
  if (spec.days <= 0) {
    return absl::InvalidArgumentError("validity days must be positive");
  }
  std::vector<Identity> ids = {ControllerIdentity(spec.cluster),
                               AdminIdentity(spec.cluster, "operator")};
  for (const std::string& n : spec.nodes) {
    ids.push_back(NodeIdentity(spec.cluster, n));
  }
  for (const std::string& d : spec.devices) {
    ids.push_back(DeviceIdentity(spec.cluster, d));
  }
  for (const Identity& id : ids) {
    if (id.kind != Identity::Kind::kController) {
      ES_RETURN_IF_ERROR(CheckIdentityName("name", id.name));
    }
  }
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create ", dir));
  }
  ES_ASSIGN_OR_RETURN(KeyAndCert ca,
                      CreateCa(spec.cluster, ValidFor(spec.days)));
  ES_RETURN_IF_ERROR(WritePair(dir, "ca", ca, spec.overwrite));
  // The controller's route-grant signing key (servers get the public half
  // with their plans).
  ES_ASSIGN_OR_RETURN(GrantKeyPair grant, NewGrantKeyPair());
  ES_RETURN_IF_ERROR(
      WriteFileAtomically(dir + "/grant.key", grant.private_pem, 0600));
  for (const Identity& id : ids) {
    ES_ASSIGN_OR_RETURN(KeyAndCert kc,
                        IssueCertificate(ca, id, ValidFor(spec.days)));
    ES_RETURN_IF_ERROR(WritePair(dir, CertFileStem(id), kc, spec.overwrite));
  }
  return absl::OkStatus();
}

absl::Status IssueIntoDir(const std::string& dir, const Identity& id, int days,
                          bool overwrite) {
  KeyAndCert ca;
  ES_ASSIGN_OR_RETURN(ca.cert_pem, ReadFile(dir + "/ca.pem"));
  ES_ASSIGN_OR_RETURN(ca.key_pem, ReadFile(dir + "/ca.key"));
  ES_ASSIGN_OR_RETURN(std::string cluster, CaCluster(ca.cert_pem));
  if (cluster != id.cluster) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, "/ca.pem is the CA of cluster \"", cluster,
                     "\", not of \"", id.cluster, "\""));
  }
  ES_ASSIGN_OR_RETURN(KeyAndCert kc, IssueCertificate(ca, id, ValidFor(days)));
  return WritePair(dir, CertFileStem(id), kc, overwrite);
}

}  // namespace edgesplit
