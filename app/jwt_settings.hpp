#pragma once
// The token settings `serve` and `token` share: the HS256 secret (or its file), the JWKS file
// of an identity provider, and the issuer and audience every token must name.

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "settings.hpp"

namespace ledger::api {
class TokenVerifier;
}

namespace ledger::app {

struct JwtOptions {
  std::string secret;
  std::string secret_file;
  std::string jwks_file;
  std::string issuer;
  std::string audience;
};

// --jwt-secret, --jwt-secret-file, --jwt-issuer and --jwt-audience (LEDGER_JWT_…), and
// --jwt-jwks-file when `with_jwks`.
void add_jwt_options(CLI::App& command, JwtOptions& options, bool with_jwks);

// The HS256 secret from --jwt-secret or --jwt-secret-file (which keeps it out of `ps`), or ""
// when neither is set. Throws SettingError naming the setting when both are set, when the file
// cannot be read, or when the secret is the public development one or shorter than
// api::jwt_secret_length_min.
[[nodiscard]] std::string resolve_jwt_secret(const JwtOptions& options);

// serve's verifier: HS256 with the secret, RS256/ES256 with the JWKS file, at least one of
// them. Throws SettingError naming the setting that cannot be used.
[[nodiscard]] std::shared_ptr<const api::TokenVerifier> make_token_verifier(const JwtOptions& options);

// One log line saying which tokens serve accepts (never the secret).
void log_token_settings(const JwtOptions& options, const api::TokenVerifier& verifier);

}  // namespace ledger::app
