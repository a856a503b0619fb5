// `edgesplit certs init|issue|token` (a cluster's CA and certificates) and the
// TLS flags every command that talks to a cluster takes:
//   --certs DIR        the directory `certs init` wrote (or $EDGESPLIT_CERTS):
//                      DIR/ca.pem and this device's device-<name>.pem/.key
//                      (admin-operator.* for `cluster status`)
//   --ca/--cert/--key  explicit files instead (each overrides DIR's)
//   --token FILE       a device bearer token instead of a certificate
//   --insecure         plaintext, loopback addresses only
#ifndef EDGESPLIT_DEVICE_AGENT_CLI_SECURITY_COMMANDS_H_
#define EDGESPLIT_DEVICE_AGENT_CLI_SECURITY_COMMANDS_H_

#include <ostream>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "device_agent/cli/args.h"
#include "edgesplit/device_agent.h"
#include "security/tls.h"

namespace edgesplit {
namespace cli {

extern const std::set<std::string> kTlsFlags;      // Take a value.
extern const std::set<std::string> kTlsBoolFlags;  // --insecure.
// `flags` with the TLS flags added.
std::set<std::string> WithTls(std::set<std::string> flags);

// Fills `o->tls` / `o->insecure` for device `device_name`.
absl::Status ApplyTlsFlags(const Args& a, const std::string& device_name,
                           DeviceAgentOptions* o);
// The operator's credentials (admin-operator.* in --certs DIR).
absl::StatusOr<TlsConfig> AdminTlsConfig(const Args& a);

// certs init --cluster NAME --out DIR [--nodes a,b] [--devices d,e]
//            [--days N] [--force]
// certs issue --dir DIR (--node N | --device N | --admin N) [--days N]
//            [--force]
// certs token --dir DIR --device N [--days N] [--out FILE] [--force]
absl::Status CertsCommand(const std::string& sub, const Args& a,
                          std::ostream& out);
std::set<std::string> CertsFlags(const std::string& sub);

}  // namespace cli
}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_CLI_SECURITY_COMMANDS_H_
