// hello_split CONTROLLER MODEL_ID "prompt" CERTS_DIR DEVICE
// Generates text with the model split between this device and the edge
// servers the controller's plan names, over mutual TLS with the files
// `edgesplit certs init` wrote to CERTS_DIR.
#include <iostream>

#include "edgesplit/device_agent.h"

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: hello_split HOST:PORT MODEL_ID PROMPT CERTS_DIR "
                 "DEVICE\n";
    return 2;
  }
  edgesplit::DeviceAgentOptions options;
  options.controller = argv[1];
  const std::string certs = argv[4], device = argv[5];
  options.tls.ca_file = certs + "/ca.pem";
  options.tls.cert_file = certs + "/device-" + device + ".pem";
  options.tls.key_file = certs + "/device-" + device + ".key";
  auto agent = edgesplit::DeviceAgent::Connect(options);
  if (!agent.ok()) {
    std::cerr << agent.status() << "\n";
    return 1;
  }
  auto session = (*agent)->OpenSession(argv[2]);
  if (!session.ok()) {
    std::cerr << session.status() << "\n";
    return 1;
  }
  edgesplit::SamplingOptions sampling;
  sampling.temperature = 0;  // Greedy.
  auto stats = (*session)->Generate(
      argv[3], sampling,
      [](absl::string_view text) { std::cout << text << std::flush; });
  if (!stats.ok()) {
    std::cerr << "\n" << stats.status() << "\n";
    return 1;
  }
  std::cout << "\n";
  std::cerr << (*session)->route() << ": " << stats->decode_tokens_per_s
            << " tokens/s\n";
  return 0;
}
