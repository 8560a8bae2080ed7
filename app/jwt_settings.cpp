#include "jwt_settings.hpp"

#include <spdlog/spdlog.h>

#include "ledger/api/auth.hpp"

namespace ledger::app {
namespace {

constexpr const char* jwt_secret_setting = "--jwt-secret (LEDGER_JWT_SECRET)";
constexpr const char* jwt_secret_file_setting = "--jwt-secret-file (LEDGER_JWT_SECRET_FILE)";
constexpr const char* jwt_jwks_file_setting = "--jwt-jwks-file (LEDGER_JWT_JWKS_FILE)";

}  // namespace

void add_jwt_options(CLI::App& command, JwtOptions& options, bool with_jwks) {
  command
      .add_option("--jwt-secret", options.secret,
                  with_jwks ? "HS256 secret of bearer tokens (this, --jwt-secret-file or --jwt-jwks-file is required)"
                            : "HS256 secret to sign with (or --jwt-secret-file)")
      ->envname("LEDGER_JWT_SECRET");
  command
      .add_option("--jwt-secret-file", options.secret_file,
                  "File holding the HS256 secret (trailing newline trimmed); keeps it out of ps")
      ->envname("LEDGER_JWT_SECRET_FILE");
  if (with_jwks) {
    command
        .add_option("--jwt-jwks-file", options.jwks_file,
                    "JWKS file of an identity provider: RS256 and ES256 tokens are verified with its "
                    "keys, chosen by kid; read again within a second of a change")
        ->envname("LEDGER_JWT_JWKS_FILE");
  }
  command
      .add_option("--jwt-issuer", options.issuer,
                  with_jwks ? "When set, every token's iss must be this" : "The iss claim (serve's --jwt-issuer)")
      ->envname("LEDGER_JWT_ISSUER");
  command
      .add_option("--jwt-audience", options.audience,
                  with_jwks ? "When set, every token's aud must name this; when not, tokens with an aud are refused"
                            : "The aud claim (serve's --jwt-audience)")
      ->envname("LEDGER_JWT_AUDIENCE");
}

// The development secret is public (it is in the source), so it is refused whatever the
// environment says; `ledger dev` gives serve a random secret of its home instead.
std::string resolve_jwt_secret(const JwtOptions& options) {
  if (!options.secret.empty() && !options.secret_file.empty()) {
    throw SettingError(jwt_secret_file_setting, "give --jwt-secret or --jwt-secret-file, not both");
  }
  if (options.secret.empty() && options.secret_file.empty()) return "";
  const char* setting = options.secret_file.empty() ? jwt_secret_setting : jwt_secret_file_setting;
  const std::string secret =
      options.secret_file.empty() ? options.secret : read_secret_file(options.secret_file, setting);
  if (secret == api::development_jwt_secret) {
    throw SettingError(setting,
                       "the development secret is public and refused; `ledger dev` makes a random "
                       "one for its home");
  }
  if (secret.size() < api::jwt_secret_length_min) {
    throw SettingError(setting,
                       "must be at least " + std::to_string(api::jwt_secret_length_min) + " bytes");
  }
  return secret;
}

std::shared_ptr<const api::TokenVerifier> make_token_verifier(const JwtOptions& options) {
  api::TokenSettings settings;
  settings.hs256_secret = resolve_jwt_secret(options);
  settings.jwks_file = options.jwks_file;
  settings.issuer = options.issuer;
  settings.audience = options.audience;
  if (settings.hs256_secret.empty() && settings.jwks_file.empty()) {
    throw SettingError(jwt_secret_setting,
                       "required (or --jwt-secret-file, LEDGER_JWT_SECRET_FILE, or --jwt-jwks-file, "
                       "LEDGER_JWT_JWKS_FILE)");
  }
  std::shared_ptr<const api::TokenVerifier> verifier;
  try {
    verifier = std::make_shared<const api::TokenVerifier>(settings);
  } catch (const api::JwksError& error) {
    throw SettingError(jwt_jwks_file_setting, error.what());
  }
  return verifier;
}

void log_token_settings(const JwtOptions& options, const api::TokenVerifier& verifier) {
  const bool hs256 = !options.secret.empty() || !options.secret_file.empty();
  std::string accepted = hs256 ? "HS256 (secret)" : "";
  if (!options.jwks_file.empty()) {
    std::string kids;
    for (const auto& kid : verifier.key_ids()) kids += (kids.empty() ? "" : ", ") + kid;
    accepted += (accepted.empty() ? "" : ", ") + std::string("RS256/ES256 from ") + options.jwks_file +
                " (keys " + kids + ")";
  }
  spdlog::info("tokens accepted: {}; iss {}; aud {}", accepted,
               options.issuer.empty() ? "not checked" : options.issuer,
               options.audience.empty() ? "none (tokens naming one are refused)" : options.audience);
}

}  // namespace ledger::app
