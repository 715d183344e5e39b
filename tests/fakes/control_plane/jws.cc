#include "tests/fakes/control_plane/jws.h"

#include <openssl/hmac.h>

#include <array>
#include <utility>

#include "base/encoding.h"
#include "base/json.h"

namespace cakewalk::testing {
namespace {

using EvpPkey = CPtr<EVP_PKEY, EVP_PKEY_free>;
using EvpMdCtx = CPtr<EVP_MD_CTX, EVP_MD_CTX_free>;

struct ForgeryEntry {
  Forgery forgery;
  std::string_view name;
};

constexpr std::array<ForgeryEntry, 14> kForgeries = {{
    {Forgery::kNone, "none"},
    {Forgery::kBadSignature, "bad_signature"},
    {Forgery::kAlgNone, "alg_none"},
    {Forgery::kHs256WithPublicKey, "hs256_public_key"},
    {Forgery::kUnknownKid, "unknown_kid"},
    {Forgery::kMissingKid, "missing_kid"},
    {Forgery::kTamperedPayload, "tampered_payload"},
    {Forgery::kWrongAudience, "wrong_audience"},
    {Forgery::kExpired, "expired"},
    {Forgery::kIssuedInFuture, "issued_in_future"},
    {Forgery::kReplayedJti, "replayed_jti"},
    {Forgery::kUnknownType, "unknown_type"},
    {Forgery::kConnectionNotConfigured, "connection_not_configured"},
    {Forgery::kMissingClaims, "missing_claims"},
}};

std::string Segment(const Json::Value& value) { return Base64UrlEncode(AsBytes(WriteJson(value))); }

}  // namespace

Result<JobSigningKey> JobSigningKey::Generate(std::string kid) {
  if (kid.empty()) return InvalidArgument("a job-signing key needs a kid");
  EvpPkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (key == nullptr) return Internal("Ed25519 key generation failed");
  std::vector<std::uint8_t> raw(32);
  std::size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), raw.data(), &len) != 1 || len != 32) {
    return Internal("could not read the Ed25519 public key");
  }
  return JobSigningKey(std::move(kid), std::move(key), std::move(raw));
}

Json::Value JobSigningKey::Jwk() const {
  Json::Value jwk(Json::objectValue);
  jwk["kty"] = "OKP";
  jwk["crv"] = "Ed25519";
  jwk["kid"] = kid_;
  jwk["x"] = Base64UrlEncode(public_key_);
  return jwk;
}

Result<std::vector<std::uint8_t>> JobSigningKey::Sign(std::string_view data) const {
  EvpMdCtx ctx(EVP_MD_CTX_new());
  if (ctx == nullptr) return Internal("EVP_MD_CTX_new failed");
  // Ed25519 is a one-shot signature: no digest, EVP_DigestSign over the whole message.
  if (EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) != 1) {
    return Internal("EVP_DigestSignInit(Ed25519) failed");
  }
  std::vector<std::uint8_t> sig(64);
  std::size_t len = sig.size();
  if (EVP_DigestSign(ctx.get(), sig.data(), &len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1 ||
      len != 64) {
    return Internal("Ed25519 signing failed");
  }
  return sig;
}

std::string_view ForgeryName(Forgery forgery) noexcept {
  for (const auto& e : kForgeries) {
    if (e.forgery == forgery) return e.name;
  }
  return "unknown";
}

std::optional<Forgery> ParseForgery(std::string_view name) {
  for (const auto& e : kForgeries) {
    if (e.name == name) return e.forgery;
  }
  return std::nullopt;
}

std::vector<Forgery> AllForgeries() {
  std::vector<Forgery> out;
  for (const auto& e : kForgeries) {
    if (e.forgery != Forgery::kNone) out.push_back(e.forgery);
  }
  return out;
}

Result<std::string> SignCompactJws(const JobSigningKey& key, const Json::Value& header,
                                   const Json::Value& payload) {
  std::string input = Segment(header) + "." + Segment(payload);
  CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> sig, key.Sign(input));
  return input + "." + Base64UrlEncode(sig);
}

Result<std::string> MakeJobJws(const Json::Value& claims, Forgery forgery,
                               const JobSigningKey& signer, const JobSigningKey& stranger) {
  Json::Value header(Json::objectValue);
  header["alg"] = "EdDSA";
  header["kid"] = signer.kid();
  header["typ"] = "JWT";

  switch (forgery) {
    case Forgery::kBadSignature: {
      std::string input = Segment(header) + "." + Segment(claims);
      CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> sig, signer.Sign(input));
      sig[0] ^= 0x01;  // R's first byte: the equation no longer holds
      return input + "." + Base64UrlEncode(sig);
    }
    case Forgery::kAlgNone: {
      Json::Value none(Json::objectValue);
      none["alg"] = "none";
      none["typ"] = "JWT";
      return Segment(none) + "." + Segment(claims) + ".";
    }
    case Forgery::kHs256WithPublicKey: {
      header["alg"] = "HS256";
      std::string input = Segment(header) + "." + Segment(claims);
      std::array<unsigned char, 32> mac{};
      unsigned int mac_len = 0;
      if (HMAC(EVP_sha256(), signer.public_key().data(),
               static_cast<int>(signer.public_key().size()),
               reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac.data(),
               &mac_len) == nullptr ||
          mac_len != mac.size()) {
        return Internal("HMAC-SHA256 failed");
      }
      return input + "." + Base64UrlEncode(mac);
    }
    case Forgery::kUnknownKid:
      header["kid"] = stranger.kid();
      return SignCompactJws(stranger, header, claims);
    case Forgery::kMissingKid:
      header.removeMember("kid");
      return SignCompactJws(signer, header, claims);
    case Forgery::kTamperedPayload: {
      std::string header_segment = Segment(header);
      CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> sig,
                          signer.Sign(header_segment + "." + Segment(claims)));
      Json::Value tampered = claims;
      if (!tampered["params"].isObject()) tampered["params"] = Json::Value(Json::objectValue);
      tampered["params"]["tampered"] = true;
      return header_segment + "." + Segment(tampered) + "." + Base64UrlEncode(sig);
    }
    case Forgery::kNone:
    case Forgery::kWrongAudience:
    case Forgery::kExpired:
    case Forgery::kIssuedInFuture:
    case Forgery::kReplayedJti:
    case Forgery::kUnknownType:
    case Forgery::kConnectionNotConfigured:
    case Forgery::kMissingClaims:
      return SignCompactJws(signer, header, claims);
  }
  return Internal("unhandled forgery kind");
}

Result<DecodedJws> DecodeCompactJws(std::string_view jws) {
  const std::size_t dot1 = jws.find('.');
  if (dot1 == std::string_view::npos) return InvalidArgument("JWS has no '.'");
  const std::size_t dot2 = jws.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || jws.find('.', dot2 + 1) != std::string_view::npos) {
    return InvalidArgument("JWS does not have exactly three parts");
  }
  DecodedJws out;
  CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> header_bytes, Base64UrlDecode(jws.substr(0, dot1)));
  CW_ASSIGN_OR_RETURN(out.header, ParseJson(AsChars(header_bytes), "JWS header"));
  CW_ASSIGN_OR_RETURN(std::vector<std::uint8_t> payload_bytes,
                      Base64UrlDecode(jws.substr(dot1 + 1, dot2 - dot1 - 1)));
  out.payload = std::string(AsChars(payload_bytes));
  CW_ASSIGN_OR_RETURN(out.signature, Base64UrlDecode(jws.substr(dot2 + 1)));
  out.signing_input = std::string(jws.substr(0, dot2));
  return out;
}

}  // namespace cakewalk::testing
