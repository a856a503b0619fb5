// `edgesplit`: the command-line front end of the device side.
#include <iostream>
#include <string>
#include <vector>

#include "device_agent/cli/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return edgesplit::cli::Run(args, std::cout, std::cerr);
}
