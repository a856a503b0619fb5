// X.509 certificates for a cluster, made with OpenSSL's library (not the
// shell tool): a CA, and leaf certificates whose only name is the holder's
// SPIFFE ID (security/identity.h). Keys are ECDSA P-256, signatures
// SHA-256; leaves may act as TLS server and client (mutual TLS).
#ifndef EDGESPLIT_SECURITY_CERTS_H_
#define EDGESPLIT_SECURITY_CERTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "security/identity.h"

namespace edgesplit {

struct KeyAndCert {
  std::string key_pem;   // PKCS#8 private key.
  std::string cert_pem;  // The certificate.
};

struct Validity {
  absl::Time not_before;
  absl::Time not_after;
};
// From an hour ago (clock skew) for `days`.
Validity ValidFor(int days);

// A self-signed CA for `cluster` (CN "edgesplit <cluster> CA").
absl::StatusOr<KeyAndCert> CreateCa(const std::string& cluster,
                                    const Validity& validity);
// A leaf for `id`, signed by `ca`, with a fresh key and a random serial.
absl::StatusOr<KeyAndCert> IssueCertificate(const KeyAndCert& ca,
                                            const Identity& id,
                                            const Validity& validity);
// A CRL signed by `ca` revoking the certificates `revoked` (PEM each),
// valid for `days`.
absl::StatusOr<std::string> CreateCrl(const KeyAndCert& ca,
                                      const std::vector<std::string>& revoked,
                                      int days);
// The file name OpenSSL looks a CRL up by in a CRL directory
// (`<issuer-hash>.r0`), for `ca_cert_pem`'s CRLs.
absl::StatusOr<std::string> CrlFileName(const std::string& ca_cert_pem);

// The identity a certificate names (its one spiffe:// URI SAN).
absl::StatusOr<Identity> CertificateIdentity(const std::string& cert_pem);
// Checks that `cert_pem` chains to `ca_pem`, is valid now and matches
// `key_pem` (when not empty); returns the identity it names. Errors say
// which check failed (OpenSSL's reason).
absl::StatusOr<Identity> CheckCertificate(const std::string& ca_pem,
                                          const std::string& cert_pem,
                                          const std::string& key_pem);
// The cluster a CA made by CreateCa() is for (from its common name).
absl::StatusOr<std::string> CaCluster(const std::string& ca_cert_pem);
// Its serial number in hex (for messages and tests).
absl::StatusOr<std::string> CertificateSerial(const std::string& cert_pem);

// What `edgesplit certs init` writes into `dir` (created if missing):
//   ca.pem ca.key                  the cluster CA (keep ca.key offline)
//   controller.pem controller.key
//   node-<name>.pem .key           per server
//   device-<name>.pem .key         per device
//   admin-operator.pem .key        for `edgesplit cluster ...`
//   grant.key                      the controller's route-grant key
// Keys are written 0600. Existing files are overwritten only with
// `overwrite`.
struct ClusterCertsSpec {
  std::string cluster;
  std::vector<std::string> nodes;
  std::vector<std::string> devices;
  int days = 365;
  bool overwrite = false;
};
absl::Status WriteClusterCerts(const ClusterCertsSpec& spec,
                               const std::string& dir);
// Issues one more certificate for `id` with the CA in `dir` (ca.pem and
// ca.key), written as CertFileStem(id) + ".pem"/".key" in `dir`.
absl::Status IssueIntoDir(const std::string& dir, const Identity& id, int days,
                          bool overwrite);
// "controller", "node-server-a", "device-phone", "admin".
std::string CertFileStem(const Identity& id);

}  // namespace edgesplit

#endif  // EDGESPLIT_SECURITY_CERTS_H_
