#include "ledger/api/auth.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jwt/jwt.hpp>
#include <openssl/crypto.h>
#include <rapidjson/document.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>
#include <unordered_map>

#include "hs256.hpp"
#include "jwks.hpp"

namespace ledger::api {

namespace {

using Claims = rapidjson::Document;

bool is_visible_ascii(std::string_view text, std::size_t length_max) {
  if (text.empty() || text.size() > length_max) return false;
  for (char c : text) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

Problem unauthorized(std::string detail) {
  return Problem{401, "unauthorized", "Unauthorized", std::move(detail)};
}

// A JSON object from a token part (header or claims): valid UTF-8, and no name twice, because
// readers disagree on which of two values counts (RapidJSON takes the first, many the last).
std::optional<Claims> json_object(std::string_view part) {
  const auto text = base64url_decode(part);
  if (!text) return std::nullopt;
  Claims document;
  document.Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag>(
      text->data(), text->size());
  if (document.HasParseError() || !document.IsObject()) return std::nullopt;
  std::set<std::string_view> names;
  const rapidjson::Value& object = document;  // const iterators: one operator== in C++20
  for (const auto& member : object.GetObject()) {
    if (!names.emplace(member.name.GetString(), member.name.GetStringLength()).second) {
      return std::nullopt;
    }
  }
  return document;
}

std::optional<std::string_view> string_member(const rapidjson::Value& object, const char* name) {
  const auto found = object.FindMember(name);
  if (found == object.MemberEnd() || !found->value.IsString()) return std::nullopt;
  return std::string_view(found->value.GetString(), found->value.GetStringLength());
}

std::optional<std::int64_t> integer_member(const rapidjson::Value& object, const char* name) {
  const auto found = object.FindMember(name);
  if (found == object.MemberEnd() || !found->value.IsInt64()) return std::nullopt;
  return found->value.GetInt64();
}

// What identifies one version of the JWKS file: a rename over it changes the inode, a write
// in place the size or the modification time (nanoseconds).
struct FileStamp {
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = -1;
  timespec modified{};
  timespec changed{};
  bool operator==(const FileStamp& other) const {
    return device == other.device && inode == other.inode && size == other.size &&
           modified.tv_sec == other.modified.tv_sec && modified.tv_nsec == other.modified.tv_nsec &&
           changed.tv_sec == other.changed.tv_sec && changed.tv_nsec == other.changed.tv_nsec;
  }
};

FileStamp stamp_of(const struct stat& status) {
  return {status.st_dev, status.st_ino, status.st_size, status.st_mtim, status.st_ctim};
}

struct JwksFile {
  std::string text;
  FileStamp stamp;
  bool stable = true;  // false: the file changed while it was read; read it again later
};

// The file's content and the stamp it had while it was read. Throws JwksError.
JwksFile read_jwks_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw JwksError("cannot read " + path + ": " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat before {};
  if (::fstat(fd, &before) != 0) throw JwksError("cannot read " + path + ": " + std::strerror(errno));
  if (!S_ISREG(before.st_mode)) throw JwksError("cannot read " + path + ": not a regular file");
  if (static_cast<std::size_t>(before.st_size) > jwks_file_bytes_max) {
    throw JwksError(path + " is larger than " + std::to_string(jwks_file_bytes_max) + " bytes");
  }
  JwksFile file;
  file.text.resize(jwks_file_bytes_max + 1);
  std::size_t length = 0;
  while (length < file.text.size()) {
    const ssize_t read = ::read(fd, file.text.data() + length, file.text.size() - length);
    if (read < 0 && errno == EINTR) continue;
    if (read < 0) throw JwksError("cannot read " + path + ": " + std::strerror(errno));
    if (read == 0) break;
    length += static_cast<std::size_t>(read);
  }
  if (length > jwks_file_bytes_max) {
    throw JwksError(path + " is larger than " + std::to_string(jwks_file_bytes_max) + " bytes");
  }
  file.text.resize(length);
  struct stat after {};
  if (::fstat(fd, &after) != 0) throw JwksError("cannot read " + path + ": " + std::strerror(errno));
  file.stamp = stamp_of(after);
  file.stable = stamp_of(before) == file.stamp;
  return file;
}

std::vector<std::string> kids_of(const KeySet& set) {
  std::vector<std::string> kids;
  for (const auto& [kid, key] : set.keys) kids.push_back(kid);
  return kids;
}

std::string joined(const std::vector<std::string>& names) {
  std::string text;
  for (const auto& name : names) text += (text.empty() ? "" : ", ") + name;
  return text;
}

// What an accepted token established: who, and until when (its exp, seconds since the epoch).
struct VerifiedToken {
  Principal principal;
  std::int64_t exp = 0;
};

struct TokenHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
};

// Equal texts, compared in constant time when the lengths agree: how many bytes of a forged
// signature match a cached token's must not show in the time a lookup takes.
struct TokenEqual {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const noexcept {
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
  }
};

// Accepted tokens by their whole text (TokenVerifier's comment).
struct TokenCache {
  std::mutex mutex;  // guards tokens and generation
  std::unordered_map<std::string, VerifiedToken, TokenHash, TokenEqual> tokens;
  std::uint64_t generation = 0;  // moves on with every new key set
  std::atomic<std::uint64_t> hits{0};
  std::atomic<std::uint64_t> misses{0};

  void clear() {
    const std::lock_guard lock(mutex);
    tokens.clear();
    ++generation;
  }
};

}  // namespace

struct TokenVerifier::State {
  TokenSettings settings;
  std::atomic<std::int64_t> next_check_ns{0};  // steady clock
  mutable std::mutex mutex;                    // guards keys and stamp
  std::shared_ptr<const KeySet> keys;
  FileStamp stamp;
  TokenCache cache;

  // Verifies `token` from scratch (TokenVerifier's comment); `now` in seconds since the epoch.
  std::variant<VerifiedToken, Problem> verify(std::string_view token, std::int64_t now);

  // The key set to verify with, after reading the file again if it is time to look and it
  // changed (check_keys).
  std::shared_ptr<const KeySet> current_keys() {
    check_keys();
    const std::lock_guard lock(mutex);
    return keys;
  }

  // Reads the file again if it is time to look and it changed. Only the thread that moves
  // next_check_ns forward looks; the others go on with the key set they find.
  void check_keys() {
    const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count();
    std::int64_t next = next_check_ns.load(std::memory_order_relaxed);
    if (now >= next &&
        next_check_ns.compare_exchange_strong(
            next, now + std::chrono::nanoseconds(settings.jwks_check_interval).count())) {
      reload_if_changed();
    }
  }

  void reload_if_changed() {
    struct stat status {};
    if (::stat(settings.jwks_file.c_str(), &status) == 0) {
      const std::lock_guard lock(mutex);
      if (stamp_of(status) == stamp) return;
    }
    // Changed, or gone. `seen` is the version read: nothing when it could not be read (a
    // message once, until it can) or changed while it was read (a writer had not finished:
    // read it again at the next check rather than keep half a file's verdict).
    FileStamp seen;
    try {
      JwksFile file = read_jwks_file(settings.jwks_file);
      {
        const std::lock_guard lock(mutex);
        if (file.stamp == stamp) return;
      }
      if (file.stable) seen = file.stamp;
      auto parsed = std::make_shared<const KeySet>(parse_jwks(file.text));
      const auto kids = kids_of(*parsed);
      {
        const std::lock_guard lock(mutex);
        keys = std::move(parsed);
        stamp = seen;
      }
      // After the swap: a verification that took the old keys either finds the generation
      // moved on and caches nothing, or cached before this and is cleared with the rest.
      cache.clear();
      spdlog::info("JWKS file {} reloaded: keys {}", settings.jwks_file, joined(kids));
    } catch (const JwksError& error) {
      const std::lock_guard lock(mutex);
      if (seen == stamp) return;
      // Logged once per version of the file: the next check finds the same stamp.
      stamp = seen;
      spdlog::error("JWKS file {} not reloaded, keeping keys {}: {}", settings.jwks_file,
                    joined(kids_of(*keys)), error.what());
    }
  }
};

TokenVerifier::TokenVerifier(TokenSettings settings) : state_(std::make_unique<State>()) {
  state_->settings = std::move(settings);
  if (!state_->settings.jwks_file.empty()) {
    JwksFile file = read_jwks_file(state_->settings.jwks_file);
    try {
      state_->keys = std::make_shared<const KeySet>(parse_jwks(file.text));
    } catch (const JwksError& error) {
      throw JwksError(state_->settings.jwks_file + ": " + error.what());
    }
    state_->stamp = file.stable ? file.stamp : FileStamp{};
    state_->next_check_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                (std::chrono::steady_clock::now() + state_->settings.jwks_check_interval)
                                    .time_since_epoch())
                                .count();
  }
}

TokenVerifier::~TokenVerifier() = default;

std::vector<std::string> TokenVerifier::key_ids() const {
  if (state_->settings.jwks_file.empty()) return {};
  return kids_of(*state_->current_keys());
}

TokenCacheStats TokenVerifier::cache_stats() const {
  TokenCacheStats stats;
  stats.hits = state_->cache.hits.load(std::memory_order_relaxed);
  stats.misses = state_->cache.misses.load(std::memory_order_relaxed);
  const std::lock_guard lock(state_->cache.mutex);
  stats.entries = state_->cache.tokens.size();
  return stats;
}

std::variant<Principal, Problem> TokenVerifier::authenticate(std::string_view authorization) const {
  constexpr std::string_view scheme = "Bearer ";
  if (authorization.empty()) return unauthorized("missing Authorization: Bearer token");
  if (authorization.size() <= scheme.size() || authorization.substr(0, scheme.size()) != scheme) {
    return unauthorized("Authorization must be 'Bearer <token>'");
  }
  const std::string_view token = authorization.substr(scheme.size());
  // A new key set empties the cache, so it is looked for before the cache is asked, even when
  // every token in use is cached.
  if (!state_->settings.jwks_file.empty()) state_->check_keys();
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  TokenCache& cache = state_->cache;
  const bool cacheable = token.size() <= jwt_cache_token_bytes_max;
  std::uint64_t generation = 0;
  if (cacheable) {
    const std::lock_guard lock(cache.mutex);
    const auto found = cache.tokens.find(token);
    if (found != cache.tokens.end()) {
      // Checked as the first use checked it (verify below): only the clock has moved since.
      if (found->second.exp <= now - jwt_clock_leeway.count()) {
        cache.tokens.erase(found);
        return unauthorized("token expired");
      }
      cache.hits.fetch_add(1, std::memory_order_relaxed);
      return found->second.principal;
    }
    generation = cache.generation;
  }
  cache.misses.fetch_add(1, std::memory_order_relaxed);
  auto verified = state_->verify(token, now);
  auto* accepted = std::get_if<VerifiedToken>(&verified);
  if (accepted == nullptr) return std::get<Problem>(std::move(verified));
  if (cacheable) {
    const std::lock_guard lock(cache.mutex);
    // Not when a new key set came while this token was verified with the one before.
    if (cache.generation == generation) {
      // Any entry may go: filling the cache takes tokens that verify, and a token pushed out
      // is merely verified again at its next use.
      if (cache.tokens.size() >= jwt_cache_entries_max) cache.tokens.erase(cache.tokens.begin());
      cache.tokens.emplace(std::string(token), *accepted);
    }
  }
  return std::move(accepted->principal);
}

std::variant<VerifiedToken, Problem> TokenVerifier::State::verify(std::string_view token, std::int64_t now) {
  const auto first_dot = token.find('.');
  const auto last_dot = token.rfind('.');
  if (first_dot == std::string_view::npos || last_dot == first_dot ||
      token.find('.', first_dot + 1) != last_dot) {
    return unauthorized("malformed token: not three base64url parts");
  }
  const std::string_view signing_input = token.substr(0, last_dot);
  const auto header = json_object(token.substr(0, first_dot));
  if (!header) return unauthorized("malformed token: the header is not a base64url JSON object");
  // Extensions this server does not know must not be ignored (RFC 7515 4.1.11).
  if (header->HasMember("crit")) return unauthorized("invalid token: unsupported crit header");
  const auto alg = string_member(*header, "alg");
  if (!alg) return unauthorized("malformed token: no alg");

  // The algorithm comes from the token, but each key answers only for its own: the secret for
  // HS256, a JWKS key for the algorithm of its type. So an HS256 token "signed" with a public
  // key, or a token of any other algorithm (none included), is refused.
  if (*alg == "HS256") {
    if (settings.hs256_secret.empty()) return unauthorized("invalid token: HS256 is not accepted here");
    if (!hs256_signature_matches(token, settings.hs256_secret)) {
      return unauthorized("invalid token: bad signature");
    }
  } else if (*alg == "RS256" || *alg == "ES256") {
    if (settings.jwks_file.empty()) {
      return unauthorized("invalid token: " + std::string(*alg) + " is not accepted here");
    }
    const auto kid = string_member(*header, "kid");
    if (!kid) return unauthorized("invalid token: no kid");
    const auto keys = current_keys();
    const auto found = keys->keys.find(*kid);
    if (found == keys->keys.end()) return unauthorized("invalid token: unknown kid");
    const KeyAlgorithm wanted = *alg == "RS256" ? KeyAlgorithm::rs256 : KeyAlgorithm::es256;
    if (found->second.algorithm != wanted) {
      return unauthorized("invalid token: the key of this kid is not an " + std::string(*alg) + " key");
    }
    const auto signature = base64url_decode(token.substr(last_dot + 1));
    if (!signature || !signature_matches(found->second, signing_input, *signature)) {
      return unauthorized("invalid token: bad signature");
    }
  } else {
    return unauthorized("invalid token: unsupported alg");
  }

  // Signed by a key we trust: now the claims.
  const auto claims = json_object(token.substr(first_dot + 1, last_dot - first_dot - 1));
  if (!claims) return unauthorized("malformed token: the claims are not a base64url JSON object");
  const std::int64_t leeway = jwt_clock_leeway.count();
  const auto exp = integer_member(*claims, "exp");
  if (!exp) return unauthorized("token has no exp claim");
  // exp is when it stops being valid (RFC 7519 4.1.4); leeway for the issuer's clock.
  if (*exp <= now - leeway) return unauthorized("token expired");
  if (claims->HasMember("nbf")) {
    const auto nbf = integer_member(*claims, "nbf");
    if (!nbf) return unauthorized("invalid token: nbf is not a number of seconds");
    if (*nbf > now + leeway) return unauthorized("token not valid yet (nbf)");
  }
  if (!settings.issuer.empty() && string_member(*claims, "iss") != settings.issuer) {
    return unauthorized("invalid token: wrong or missing iss");
  }
  const auto aud = claims->FindMember("aud");
  if (aud != claims->MemberEnd() && settings.audience.empty()) {
    return unauthorized("invalid token: it names an audience (aud) and this server has none");
  }
  if (!settings.audience.empty()) {
    auto is_ours = [this](const rapidjson::Value& value) {
      return value.IsString() &&
             std::string_view(value.GetString(), value.GetStringLength()) == settings.audience;
    };
    bool ours = false;
    if (aud != claims->MemberEnd()) {
      if (aud->value.IsArray()) {
        for (const auto& one : aud->value.GetArray()) ours = ours || is_ours(one);
      } else {
        ours = is_ours(aud->value);
      }
    }
    if (!ours) return unauthorized("invalid token: wrong or missing aud");
  }
  const auto sub = string_member(*claims, "sub");
  if (!sub || sub->empty()) return unauthorized("token has no sub claim");
  if (!is_visible_ascii(*sub, jwt_subject_bytes_max)) {
    return unauthorized("the token's sub claim must be 1 to " + std::to_string(jwt_subject_bytes_max) +
                        " visible ASCII characters");
  }
  VerifiedToken verified;
  verified.exp = *exp;
  Principal& principal = verified.principal;
  principal.subject = std::string(*sub);
  const auto roles = claims->FindMember("roles");
  if (roles != claims->MemberEnd() && roles->value.IsArray()) {
    for (const auto& role : roles->value.GetArray()) {
      if (!role.IsString()) continue;
      const std::string_view name(role.GetString(), role.GetStringLength());
      if (name == "teller") principal.roles |= static_cast<std::uint8_t>(Role::teller);
      if (name == "auditor") principal.roles |= static_cast<std::uint8_t>(Role::auditor);
      if (name == "admin") principal.roles |= static_cast<std::uint8_t>(Role::admin);
    }
  }
  return verified;
}

std::string issue_token(const std::string& key, const std::string& subject,
                        const std::vector<std::string>& roles, std::chrono::seconds lifetime,
                        const std::string& issuer, const std::string& audience) {
  using namespace jwt::params;
  jwt::jwt_object token{algorithm("HS256"), secret(key)};
  token.add_claim("sub", subject);
  token.add_claim("roles", roles);
  token.add_claim("exp", std::chrono::system_clock::now() + lifetime);
  if (!issuer.empty()) token.add_claim("iss", issuer);
  if (!audience.empty()) token.add_claim("aud", audience);
  return token.signature();
}

}  // namespace ledger::api
