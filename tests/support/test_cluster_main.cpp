// ledger_test_cluster start|stop DIR: the ctest fixture that starts one private PostgreSQL
// cluster for the whole test run and stops it at the end.
#include <cstring>
#include <iostream>

#include "test_cluster.hpp"

int main(int argc, char** argv) {
  if (argc != 3 || (std::strcmp(argv[1], "start") != 0 && std::strcmp(argv[1], "stop") != 0)) {
    std::cerr << "usage: ledger_test_cluster start|stop DIR\n";
    return 2;
  }
  try {
    if (std::strcmp(argv[1], "start") == 0) {
      // A cluster left by an interrupted run is stopped first (EmbeddedPostgres does that).
      const int port = ledger::test::start_test_cluster(argv[2]);
      std::cout << "test cluster on port " << port << " in " << argv[2] << "\n";
    } else {
      ledger::test::stop_test_cluster(argv[2]);
      std::cout << "test cluster stopped\n";
    }
  } catch (const std::exception& error) {
    std::cerr << "ledger_test_cluster " << argv[1] << ": " << error.what() << "\n";
    return 1;
  }
  return 0;
}
