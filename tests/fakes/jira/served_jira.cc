#include "tests/fakes/jira/served_jira.h"

#include <utility>

namespace cakewalk::testing {

Result<std::unique_ptr<ServedJira>> ServedJira::Start(FakeJiraOptions options, Wrapper wrapper) {
  std::unique_ptr<ServedJira> s(new ServedJira());
  s->ca_ = TestCa::Create("Cakewalk Test Jira CA");
  if (s->ca_ == nullptr) return Internal("could not create the fake Jira's test CA");
  CW_ASSIGN_OR_RETURN(KeyAndCert leaf, s->ca_->Issue({}));
  s->jira_ = std::make_unique<FakeJira>(std::move(options));
  ServerOptions so;
  so.certificate_chain_pem = leaf.chain_pem;
  so.private_key_pem = leaf.key_pem;
  FakeJira* jira = s->jira_.get();
  Handler handler;
  if (wrapper) {
    handler = [jira, wrapper = std::move(wrapper)](const HttpRequest& r) {
      return wrapper(r, *jira);
    };
  } else {
    handler = [jira](const HttpRequest& r) { return jira->Handle(r); };
  }
  s->server_ = FakeHttpsServer::Start(so, std::move(handler));
  if (s->server_ == nullptr) {
    return Internal("could not serve the fake Jira on 127.0.0.1 (FakeHttpsServer::Start failed)");
  }
  return s;
}

}  // namespace cakewalk::testing
