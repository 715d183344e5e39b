#include "jira/rest.h"

#include <algorithm>
#include <cctype>

#include "base/encoding.h"
#include "base/json.h"
#include "jira/errors.h"

namespace cakewalk::jira {
namespace {

constexpr std::size_t kMaxErrorText = 400;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool Contains(std::string_view haystack, std::string_view needle) {
  return Lower(haystack).find(Lower(needle)) != std::string::npos;
}

bool IsJson(const http::Response& r) {
  const auto type = r.Header("content-type");
  return type && Contains(*type, "json");
}

std::string HostOf(std::string_view url) {
  const std::size_t start = url.find("://");
  if (start == std::string_view::npos) return std::string(url);
  const std::size_t end = url.find('/', start + 3);
  return std::string(url.substr(start + 3, end == std::string_view::npos ? end : end - start - 3));
}

// One line, printable, bounded: Jira's messages go into job errors.
std::string Clean(std::string text) {
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  if (text.size() > kMaxErrorText) text = text.substr(0, kMaxErrorText) + "...";
  return text;
}

}  // namespace

Runtime Runtime::Default() {
  Runtime r;
  r.clock = &SystemClock();
  r.sleeper = &RealSleeper();
  r.random = DefaultRandom();
  return r;
}

void SkewTracker::Record(std::optional<SysTime> server_date, SysTime local_now) {
  if (!server_date) return;
  std::lock_guard lock(mu_);
  skew_ = std::chrono::round<std::chrono::seconds>(*server_date - local_now);
}

std::optional<std::chrono::seconds> SkewTracker::skew() const {
  std::lock_guard lock(mu_);
  return skew_;
}

std::string RestReply::ErrorText() const {
  if (!json.isObject()) return "";
  std::string out;
  auto add = [&](const std::string& s) {
    if (s.empty()) return;
    if (!out.empty()) out += "; ";
    out += s;
  };
  if (json["errorMessages"].isArray()) {
    for (const auto& m : json["errorMessages"]) {
      if (m.isString()) add(m.asString());
    }
  }
  if (json["errors"].isObject()) {
    for (const auto& name : json["errors"].getMemberNames()) {
      if (json["errors"][name].isString()) add(name + ": " + json["errors"][name].asString());
    }
  }
  for (const char* key : {"message", "error_description"}) {
    if (json[key].isString()) add(json[key].asString());
  }
  return Clean(out);
}

RestClient::RestClient(std::shared_ptr<http::Transport> transport, std::string base,
                       Runtime runtime, std::shared_ptr<SkewTracker> skew)
    : transport_(std::move(transport)),
      base_(std::move(base)),
      runtime_(std::move(runtime)),
      skew_(skew ? std::move(skew) : std::make_shared<SkewTracker>()) {}

std::string RestClient::Url(const RestCall& call) const {
  std::string url = base_;
  for (const std::string& seg : call.path) url += "/" + UrlEncode(seg);
  char sep = '?';
  for (const auto& [name, value] : call.query) {
    url += sep + UrlEncode(name) + "=" + UrlEncode(value);
    sep = '&';
  }
  return url;
}

Result<RestReply> RestClient::Execute(const RestCall& call, Authenticator* auth,
                                      std::stop_token stop, std::string_view what) {
  const Clock& clock = *runtime_.clock;
  const RetryPolicy& policy = runtime_.retry;
  const std::string url = Url(call);
  const std::string host = HostOf(base_);
  const bool idempotent = call.method == "GET";
  std::string body;
  if (call.json) body = WriteJson(*call.json);

  int attempt = 0;  // retries so far
  std::chrono::milliseconds waited{0};
  bool renewed = false;
  // Waits before the next attempt, or returns the final failure when the bounds are reached.
  auto wait_or_fail = [&](std::chrono::milliseconds delay, const Status& final) -> Status {
    ++attempt;
    if (attempt >= policy.max_attempts || waited + delay > policy.max_total) {
      return final.WithRetryAfter(std::max(delay, std::chrono::milliseconds(1000)));
    }
    CW_RETURN_IF_ERROR(runtime_.sleeper->Sleep(delay, stop));
    waited += delay;
    return Status::Ok();
  };
  auto jitter = [&] {
    const auto bound = JitterBound(policy, attempt + 1);
    return std::chrono::milliseconds(
        static_cast<std::int64_t>(runtime_.random() * static_cast<double>(bound.count())));
  };

  while (true) {
    if (stop.stop_requested()) return Stopped();
    http::Request req;
    req.method = call.method;
    req.url = url;
    req.headers = call.headers;
    req.headers.push_back({"Accept", "application/json"});
    if (!call.secret_body.empty()) {
      req.sensitive_body = call.secret_body.Clone();
      req.headers.push_back(
          {"Content-Type", call.content_type.empty() ? "application/json" : call.content_type});
    } else {
      req.body = body;
    }
    req.sensitive_response = call.sensitive_response;
    // A write is sent once: libcurl must not repeat it behind our back (http.h).
    req.send_once = !idempotent;
    std::uint64_t generation = 0;
    if (auth != nullptr) {
      CW_ASSIGN_OR_RETURN(generation, auth->Apply(req, stop));
      if (auth->cookies() && call.method != "GET") {
        req.headers.push_back({"X-Atlassian-Token", "no-check"});
      }
    }

    auto sent = transport_->Send(req);
    if (!sent.ok()) {
      const Status failure =
          sent.status().reason() == http::reason::kNotResent
              ? JiraUnavailable("Jira at " + host + " did not answer " + std::string(what) +
                                " before its connection closed; it was not sent again, as Jira "
                                "may have carried it out (a job run again checks first)")
              : JiraUnavailable("could not reach " + host + " (" + std::string(what) +
                                "): " + sent.status().message());
      if (!idempotent) return failure;
      CW_RETURN_IF_ERROR(wait_or_fail(jitter(), failure));
      continue;
    }
    http::Response resp = std::move(*sent);
    skew_->Record(resp.server_date, clock.Now());
    const long status = resp.status;
    // An answer that may carry a secret is wiped on every path that does not hand it over.
    struct WipeUnlessReturned {
      http::Response& r;
      bool sensitive;
      ~WipeUnlessReturned() {
        if (sensitive) WipeString(r.body);
      }
    } wipe{resp, call.sensitive_response};

    if (auth != nullptr) {
      const std::string login_reason = Lower(resp.Header("x-seraph-loginreason").value_or(""));
      const std::string denied = resp.Header("x-authentication-denied-reason").value_or("");
      const bool anonymous = Lower(resp.Header("x-ausername").value_or("")) == "anonymous";
      const bool refused = status == 401 || login_reason.find("authenticated_failed") == 0 ||
                           login_reason.find("authentication_denied") == 0 ||
                           Contains(denied, "captcha") || anonymous;
      if (refused) {
        if (!renewed && !Contains(denied, "captcha") && auth->Renew(generation)) {
          renewed = true;
          continue;
        }
        return auth->Refused(resp, what);
      }
    }

    if (status == 429 || status == 503 || (status == 409 && call.retry_conflict)) {
      const SysTime server_now = resp.server_date.value_or(clock.Now());
      auto hint = ServerRetryHint(resp, server_now);
      std::chrono::milliseconds delay = hint && *hint > std::chrono::milliseconds::zero()
                                            ? std::min(*hint, policy.max_server_wait)
                                            : jitter();
      const Status final =
          status == 429 ? RateLimited("Jira throttled " + std::string(what) + " (HTTP 429)")
          : status == 409
              ? JiraUnavailable("Jira timed out on " + std::string(what) + " (HTTP 409)")
              : JiraUnavailable("Jira is unavailable for " + std::string(what) + " (HTTP 503)");
      CW_RETURN_IF_ERROR(wait_or_fail(delay, final));
      continue;
    }
    if (status >= 500) {
      const Status failure = JiraUnavailable("Jira answered HTTP " + std::to_string(status) +
                                             " to " + std::string(what));
      if (!idempotent) return failure;
      CW_RETURN_IF_ERROR(wait_or_fail(jitter(), failure));
      continue;
    }

    RestReply reply;
    reply.status = status;
    if (call.sensitive_response) {
      reply.response = std::move(resp);
      return reply;
    }
    if (call.unparsed_success && status >= 200 && status < 300 &&
        (resp.body.empty() || IsJson(resp))) {
      reply.response = std::move(resp);
      return reply;
    }
    if (!resp.body.empty() && IsJson(resp)) {
      auto parsed = ParseJson(resp.body, "Jira's answer");
      if (parsed.ok()) {
        reply.json = std::move(*parsed);
      } else if (status >= 200 && status < 300) {
        return JiraUnavailable("Jira answered " + std::string(what) + " with malformed JSON");
      }
    } else if (!resp.body.empty() && status >= 200 && status < 300) {
      return JiraUnavailable("Jira answered " + std::string(what) +
                             " with something other than JSON (a proxy or maintenance page?)");
    }
    reply.response = std::move(resp);
    return reply;
  }
}

bool MentionsLicenceLimit(const RestReply& reply) {
  const std::string text = Lower(reply.ErrorText());
  return text.find("licen") != std::string::npos || text.find("user limit") != std::string::npos ||
         text.find("seats") != std::string::npos;
}

Status UnexpectedReply(const RestReply& reply, std::string_view what) {
  const std::string words = reply.ErrorText();
  const std::string head = "Jira answered HTTP " + std::to_string(reply.status) + " to " +
                           std::string(what) + (words.empty() ? "" : ": " + words);
  if (reply.status == 403 && Contains(reply.response.body, "XSRF check failed")) {
    return JiraInternal(head +
                        " (XSRF check failed: a cookie-authenticated write went out without "
                        "X-Atlassian-Token)");
  }
  switch (reply.status) {
    case 400:
      if (MentionsLicenceLimit(reply)) {
        return JiraError(Code::kFailedPrecondition, head, reason::kLicenseExceeded);
      }
      return InvalidParams(head);
    case 401:
      return AuthFailed(head);
    case 403:
      if (Contains(words, "external user management")) return Unsupported(head);
      if (MentionsLicenceLimit(reply)) {
        return JiraError(Code::kFailedPrecondition, head, reason::kLicenseExceeded);
      }
      return NotAdmin(head);
    default:
      return JiraInternal(head);
  }
}

}  // namespace cakewalk::jira
