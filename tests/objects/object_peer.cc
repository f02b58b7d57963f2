// The other processes of the object-reference tests:
//
//   object_peer SOCKET NAME --ready_fd=3   publish a Holder as NAME, say ready, serve until killed
#include <unistd.h>

#include <cstdio>
#include <string>

#include "ipc/host/service_host.h"
#include "tests/objects/objects_service.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: object_peer SOCKET NAME --ready_fd=3\n");
    return 2;
  }
  auto manager = sluice::ServiceManager::Connect({.socket_path = argv[1]});
  if (!manager.ok()) {
    std::fprintf(stderr, "object_peer: %s\n", manager.status().ToString().c_str());
    return 2;
  }
  sluice::ServiceHost host(**manager);
  if (absl::Status published =
          host.Publish(std::make_shared<sluice::testing::HolderService>(), argv[2]);
      !published.ok()) {
    std::fprintf(stderr, "object_peer: %s\n", published.ToString().c_str());
    return 2;
  }
  (void)!::write(3, "ready\n", 6);
  ::close(3);
  for (;;) ::pause();
}
