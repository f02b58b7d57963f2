// Writes small valid seed inputs for the service manager fuzzers, one file
// each, into DIR/<fuzzer name>/ (fuzz/corpus in the tree), and the inputs
// that once crashed into REGRESSIONS/<fuzzer name>/:
//
//   make_servicemanager_seeds fuzz/corpus fuzz/regressions
//
// Rerun after a protocol change; the files are checked in.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "flatbuffers/idl.h"
#include "ipc/service/wire.h"

namespace {

namespace wire = ::sluice::servicemanager::wire;
using Bytes = std::vector<uint8_t>;

Bytes Finish(flatbuffers::FlatBufferBuilder& b, uint64_t id, wire::Body type,
             flatbuffers::Offset<void> body) {
  sluice::service_wire::FinishEnvelope(b, id, absl::OkStatus(), type, body);
  return Bytes(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
}

Bytes WithoutBody(wire::Body type, uint64_t id) {
  flatbuffers::FlatBufferBuilder b;
  wire::EnvelopeBuilder envelope(b);
  envelope.add_request_id(id);
  envelope.add_body_type(type);
  b.Finish(envelope.Finish(), wire::EnvelopeIdentifier());
  return Bytes(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
}

// One fuzzer record: [u8 selector][u16 length][bytes].
void Record(Bytes& out, uint8_t selector, const Bytes& message) {
  out.push_back(selector);
  out.push_back(static_cast<uint8_t>(message.size() & 0xff));
  out.push_back(static_cast<uint8_t>(message.size() >> 8));
  out.insert(out.end(), message.begin(), message.end());
}

void Write(const std::filesystem::path& dir, const std::string& name, const Bytes& bytes) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

Bytes Register(uint64_t id, const std::string& name) {
  flatbuffers::FlatBufferBuilder b;
  auto geometry = wire::CreateGeometry(b, 4, 65536, 65536);
  return Finish(b, id, wire::Body::RegisterRequest,
                wire::CreateRegisterRequest(b, b.CreateString(name), geometry).Union());
}
Bytes Lookup(uint64_t id, const std::string& name) {
  flatbuffers::FlatBufferBuilder b;
  return Finish(b, id, wire::Body::LookupRequest,
                wire::CreateLookupRequest(b, b.CreateString(name)).Union());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR REGRESSIONS_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path corpus = argv[1], regressions = argv[2];

  // ---- servicemanager_dispatch_fuzzer: peer 0 serves, peer 1 looks up.
  const auto dispatch = corpus / "servicemanager_dispatch_fuzzer";
  {
    Bytes in;
    Record(in, 0, Register(2, "f.svc"));
    Record(in, 1, Lookup(2, "f.svc"));
    flatbuffers::FlatBufferBuilder b;
    Record(in, 0, Finish(b, 0, wire::Body::ConnectionAck, wire::CreateConnectionAck(b, 1).Union()));
    Write(dispatch, "register-lookup-ack", in);
  }
  {
    Bytes in;
    Record(in, 0, Register(2, "f.svc"));
    Record(in, 1, Lookup(2, "f.svc"));
    Record(in, 0x80, {});  // The server goes before acknowledging.
    Write(dispatch, "server-gone-before-ack", in);
  }
  {
    Bytes in;
    flatbuffers::FlatBufferBuilder w;
    Record(in, 1,
           Finish(w, 3, wire::Body::WaitRequest,
                  wire::CreateWaitRequest(w, w.CreateString("f.late"), 2).Union()));
    flatbuffers::FlatBufferBuilder s;
    Record(in, 1,
           Finish(s, 4, wire::Body::SubscribeRequest,
                  wire::CreateSubscribeRequest(s, s.CreateString("f."), 9, true).Union()));
    Record(in, 0, Register(5, "f.late"));
    flatbuffers::FlatBufferBuilder l;
    Record(in, 1,
           Finish(l, 6, wire::Body::ListRequest,
                  wire::CreateListRequest(l, l.CreateString("f."), l.CreateString(""), 2).Union()));
    flatbuffers::FlatBufferBuilder i;
    Record(in, 1,
           Finish(i, 7, wire::Body::InfoRequest,
                  wire::CreateInfoRequest(i, i.CreateString("f.late")).Union()));
    flatbuffers::FlatBufferBuilder u;
    Record(
        in, 1,
        Finish(u, 8, wire::Body::UnsubscribeRequest, wire::CreateUnsubscribeRequest(u, 9).Union()));
    flatbuffers::FlatBufferBuilder r;
    Record(in, 0,
           Finish(r, 9, wire::Body::UnregisterRequest,
                  wire::CreateUnregisterRequest(r, r.CreateString("f.late")).Union()));
    Write(dispatch, "wait-subscribe-list-info", in);
  }
  {
    // Schemas: a typed registration, a compatible and an incompatible
    // client, and a Describe.
    auto bfbs = [](const char* text) {
      flatbuffers::Parser parser;
      if (!parser.Parse(text)) std::abort();
      parser.Serialize();
      return Bytes(parser.builder_.GetBufferPointer(),
                   parser.builder_.GetBufferPointer() + parser.builder_.GetSize());
    };
    const Bytes server = bfbs(
        "namespace t; struct P { x:int; } table Req { a:int; b:string; p:P; } "
        "table Resp { ok:bool; } rpc_service S { Call(Req):Resp; }");
    const Bytes client = bfbs(
        "namespace t; struct P { x:int; } table Req { a:int; b:[ubyte]; } "
        "table Resp { ok:bool; } rpc_service S { Call(Req):Resp; Other(Resp):Resp; }");
    Bytes in;
    flatbuffers::FlatBufferBuilder r;
    Record(in, 0,
           Finish(r, 2, wire::Body::RegisterRequest,
                  wire::CreateRegisterRequest(r, r.CreateString("f.typed"), 0,
                                              r.CreateString("t.S"), r.CreateVector(server), 42)
                      .Union()));
    for (const Bytes* schema : {&server, &client}) {
      flatbuffers::FlatBufferBuilder l;
      Record(in, 1,
             Finish(l, 3, wire::Body::LookupRequest,
                    wire::CreateLookupRequest(l, l.CreateString("f.typed"), 0,
                                              l.CreateString("t.S"), l.CreateVector(*schema))
                        .Union()));
    }
    flatbuffers::FlatBufferBuilder d;
    Record(in, 1,
           Finish(d, 4, wire::Body::DescribeRequest,
                  wire::CreateDescribeRequest(d, d.CreateString("f.typed")).Union()));
    Write(dispatch, "schemas-compatibility-describe", in);
  }
  {
    Bytes in;
    Record(in, 2, Register(2, "f.secret"));
    Record(in, 3, Lookup(1, "f.x"));  // Before Hello.
    Write(dispatch, "denied-and-no-hello", in);
  }
  // The inputs that crashed the daemon before commit cb29ec4: a body_type
  // naming a request, and no body.
  const auto dispatch_regressions = regressions / "servicemanager_dispatch_fuzzer";
  for (wire::Body kind :
       {wire::Body::RegisterRequest, wire::Body::UnregisterRequest, wire::Body::LookupRequest,
        wire::Body::WaitRequest, wire::Body::ListRequest, wire::Body::InfoRequest,
        wire::Body::SubscribeRequest, wire::Body::UnsubscribeRequest}) {
    Bytes in;
    Record(in, 0, WithoutBody(kind, 2));
    Write(dispatch_regressions, std::string("without-body-") + wire::EnumNameBody(kind), in);
  }

  // ---- servicemanager_client_fuzzer: events, then List's reply (id 4).
  const auto client = corpus / "servicemanager_client_fuzzer";
  {
    Bytes in;
    flatbuffers::FlatBufferBuilder n;
    const wire::Credentials creds(1, 2, 3);
    Record(
        in, 1,
        Finish(
            n, 0, wire::Body::NewConnectionEvent,
            wire::CreateNewConnectionEvent(n, n.CreateString("f.svc"), 5, &creds, 4096).Union()));
    flatbuffers::FlatBufferBuilder g;
    std::vector<uint64_t> ids = {5, 6, 7};
    Record(in, 0,
           Finish(g, 0, wire::Body::ClientGoneEvent,
                  wire::CreateClientGoneEvent(g, g.CreateString("f.svc"), 5, &creds,
                                              g.CreateVector(ids))
                      .Union()));
    flatbuffers::FlatBufferBuilder e;
    Record(in, 0,
           Finish(e, 0, wire::Body::NameEvent,
                  wire::CreateNameEvent(e, 3, wire::NameChange::kAppeared, e.CreateString("f.x"),
                                        &creds)
                      .Union()));
    flatbuffers::FlatBufferBuilder l;
    std::vector<flatbuffers::Offset<wire::ServiceInfo>> services = {
        wire::CreateServiceInfo(l, l.CreateString("f.svc"), &creds, 1, 2)};
    Record(in, 0,
           Finish(l, 4, wire::Body::ListReply,
                  wire::CreateListReply(l, l.CreateVector(services), false).Union()));
    Write(client, "events-then-list", in);
  }
  {
    Bytes in;
    Record(in, 0, WithoutBody(wire::Body::NewConnectionEvent, 0));
    Record(in, 0, WithoutBody(wire::Body::ListReply, 4));
    Write(client, "without-bodies", in);
  }

  // ---- policy_parser_fuzzer: the documented example and edge cases.
  const auto policy = corpus / "policy_parser_fuzzer";
  const std::string example =
      "# <effect> <verb> <name pattern> <principals>\n"
      "allow  register  audio.*          uid:1000\n"
      "deny   lookup    audio.admin      *\n"
      "allow  lookup    audio.*          gid:29,uid:1001\n"
      "allow  *         scratch.*        *\n"
      "allow  *         *                uid:self\n";
  Write(policy, "example", Bytes(example.begin(), example.end()));
  const std::string lint = "deny lookup x uid:0\nallow * * *\nallow lookup y uid:5\n";
  Write(policy, "never-applies", Bytes(lint.begin(), lint.end()));
  const std::string bad = "allow register\nallow bogus x *\n";
  Write(policy, "malformed", Bytes(bad.begin(), bad.end()));
  std::printf("seeds written to %s, regressions to %s\n", corpus.c_str(), regressions.c_str());
  return 0;
}
