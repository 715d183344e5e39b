// Helpers for the fake's own tests: build HttpRequests the way FakeHttpsServer hands them over
// (raw path kept, path and query percent-decoded), call FakeJira::Handle, read the answers.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "base/encoding.h"
#include "base/json.h"
#include "tests/fakes/jira/fake_jira.h"

namespace cakewalk::testing {

inline std::string TestDecode(std::string_view in, bool plus_is_space) {
  std::string out;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size() && std::isxdigit(static_cast<unsigned char>(in[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else if (in[i] == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += in[i];
    }
  }
  return out;
}

class Req {
 public:
  Req(std::string method, std::string target) {
    r_.method = std::move(method);
    r_.target = target;
    const std::size_t q = target.find('?');
    r_.raw_path = target.substr(0, q);
    r_.path = TestDecode(r_.raw_path, false);
    if (q != std::string::npos) {
      std::string_view query = std::string_view(target).substr(q + 1);
      while (!query.empty()) {
        const std::size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        const std::size_t eq = pair.find('=');
        r_.query.emplace(TestDecode(pair.substr(0, eq), true),
                         eq == std::string_view::npos ? "" : TestDecode(pair.substr(eq + 1), true));
        if (amp == std::string_view::npos) break;
        query.remove_prefix(amp + 1);
      }
    }
    r_.headers.emplace_back("host", "jira.test");
  }
  Req& Header(std::string name, std::string value) {
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r_.headers.emplace_back(std::move(name), std::move(value));
    return *this;
  }
  Req& Basic(std::string_view user, std::string_view password) {
    const std::string pair = std::string(user) + ":" + std::string(password);
    return Header("authorization", "Basic " + Base64Encode(AsBytes(pair)));
  }
  Req& Bearer(std::string_view token) {
    return Header("authorization", "Bearer " + std::string(token));
  }
  Req& Cookie(std::string value) { return Header("cookie", std::move(value)); }
  Req& NoCheck() { return Header("x-atlassian-token", "no-check"); }
  Req& Json(const Json::Value& body) {
    r_.body = WriteJson(body);
    return Header("content-type", "application/json");
  }
  Req& JsonText(std::string body) {
    r_.body = std::move(body);
    return Header("content-type", "application/json");
  }
  Req& Form(std::string body) {
    r_.body = std::move(body);
    return Header("content-type", "application/x-www-form-urlencoded");
  }
  const HttpRequest& request() const { return r_; }

 private:
  HttpRequest r_;
};

inline HttpResponse Call(FakeJira& jira, const Req& req) { return jira.Handle(req.request()); }

inline std::string HeaderOf(const HttpResponse& r, std::string_view name) {
  for (const auto& [n, v] : r.headers) {
    if (n.size() == name.size() && std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return v;
    }
  }
  return {};
}

inline int HeaderCount(const HttpResponse& r, std::string_view name) {
  int n = 0;
  for (const auto& [k, v] : r.headers) n += k == name ? 1 : 0;
  return n;
}

// The value of a cookie set by the response, or "".
inline std::string SetCookie(const HttpResponse& r, std::string_view name) {
  for (const auto& [n, v] : r.headers) {
    if (n != "Set-Cookie" || v.rfind(std::string(name) + "=", 0) != 0) continue;
    const std::size_t start = name.size() + 1;
    return v.substr(start, v.find(';') - start);
  }
  return {};
}

inline Json::Value Body(const HttpResponse& r) {
  auto parsed = ParseJson(r.body, "response");
  EXPECT_TRUE(parsed.ok()) << parsed.status().ToString() << " body: " << r.body;
  return parsed.ok() ? *parsed : Json::Value();
}

// For paging loops: the body of a 200 answer; anything else is a test failure and gives a value
// that ends the loop (an empty array, or a last page with no values).
inline Json::Value OkArray(const HttpResponse& r) {
  if (r.status != 200) {
    ADD_FAILURE() << "HTTP " << r.status << ": " << r.body;
    return Json::Value(Json::arrayValue);
  }
  return Body(r);
}
inline Json::Value OkPage(const HttpResponse& r) {
  if (r.status != 200) {
    ADD_FAILURE() << "HTTP " << r.status << ": " << r.body;
    Json::Value last(Json::objectValue);
    last["isLast"] = true;
    last["values"] = Json::Value(Json::arrayValue);
    last["data"] = Json::Value(Json::arrayValue);
    last["links"] = Json::Value(Json::objectValue);
    return last;
  }
  return Body(r);
}

// An RFC 6238 code computed here, with OpenSSL HMAC-SHA1 directly: independent of the fake's
// own implementation.
inline std::string ExpectedTotp(const std::vector<std::uint8_t>& seed, std::int64_t unix_seconds,
                                int digits = 6, int period = 30) {
  std::uint64_t counter = static_cast<std::uint64_t>(unix_seconds / period);
  unsigned char msg[8];
  for (int i = 7; i >= 0; --i, counter >>= 8) msg[i] = static_cast<unsigned char>(counter & 0xff);
  unsigned char mac[20];
  unsigned int len = 0;
  HMAC(EVP_sha1(), seed.data(), static_cast<int>(seed.size()), msg, 8, mac, &len);
  const int off = mac[19] & 0x0f;
  const std::uint32_t bin = (static_cast<std::uint32_t>(mac[off] & 0x7f) << 24) |
                            (static_cast<std::uint32_t>(mac[off + 1]) << 16) |
                            (static_cast<std::uint32_t>(mac[off + 2]) << 8) | mac[off + 3];
  std::uint32_t mod = 1;
  for (int i = 0; i < digits; ++i) mod *= 10;
  std::string code = std::to_string(bin % mod);
  return std::string(static_cast<std::size_t>(digits) - code.size(), '0') + code;
}

// The PKCE S256 challenge for `verifier`, computed here.
inline std::string PkceS256(std::string_view verifier) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(verifier.data()), verifier.size(), digest);
  return Base64UrlEncode(digest);
}

}  // namespace cakewalk::testing
