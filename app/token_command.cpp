// `ledger token`: prints an HS256 bearer token signed with the JWT secret, for operators and
// scripts (`TOKEN=$(ledger token --role auditor --subject nightly-report --ttl 15m)`).
#include <iostream>

#include "commands.hpp"
#include "jwt_settings.hpp"
#include "ledger/api/auth.hpp"

namespace ledger::app {
namespace {

// A token outlives every rotation of the secret that happens during its life; a month is
// `ledger dev`'s own token, and more than anyone should hold.
constexpr std::chrono::seconds token_lifetime_max = std::chrono::hours(24 * 30);
constexpr const char* ttl_setting = "--ttl";

struct TokenOptions {
  std::vector<std::string> roles;
  std::string subject;
  std::string ttl;
  JwtOptions jwt;
};

// "90s", "15m", "1h", "7d".
std::chrono::seconds parse_ttl(const std::string& text) {
  const std::string expected = "expected a number and a unit s, m, h or d (15m, 1h, 7d), got '" + text + "'";
  if (text.size() < 2 || text.size() > 8) throw SettingError(ttl_setting, expected);
  const std::string digits = text.substr(0, text.size() - 1);
  if (digits.find_first_not_of("0123456789") != std::string::npos) throw SettingError(ttl_setting, expected);
  const long long count = std::stoll(digits);
  long long unit_seconds = 0;
  switch (text.back()) {
    case 's': unit_seconds = 1; break;
    case 'm': unit_seconds = 60; break;
    case 'h': unit_seconds = 3'600; break;
    case 'd': unit_seconds = 86'400; break;
    default: throw SettingError(ttl_setting, expected);
  }
  const std::chrono::seconds lifetime(count * unit_seconds);  // at most 7 digits: no overflow
  if (lifetime <= std::chrono::seconds(0)) throw SettingError(ttl_setting, "must be more than 0");
  if (lifetime > token_lifetime_max) {
    throw SettingError(ttl_setting, "at most " + std::to_string(token_lifetime_max.count() / 86'400) + "d");
  }
  return lifetime;
}

// The secret from the settings, else (on the embedded stack) the one of `ledger dev`'s dev.env.
std::string token_secret(const TokenOptions& options, const Settings& settings) {
  std::string secret = resolve_jwt_secret(options.jwt);
  if (!secret.empty()) return secret;
  const auto dev = read_dev_env(settings.home);
  JwtOptions from_dev;
  if (auto file = dev.find("LEDGER_JWT_SECRET_FILE"); file != dev.end()) {
    from_dev.secret_file = file->second;
  } else if (auto value = dev.find("LEDGER_JWT_SECRET"); value != dev.end()) {
    from_dev.secret = value->second;
  }
  secret = resolve_jwt_secret(from_dev);
  if (secret.empty()) {
    throw SettingError("--jwt-secret (LEDGER_JWT_SECRET)",
                       "required (or --jwt-secret-file, LEDGER_JWT_SECRET_FILE), and no embedded stack in " +
                           settings.home);
  }
  return secret;
}

}  // namespace

CommandAction register_token_command(CLI::App& root, Settings& settings) {
  auto* token = root.add_subcommand(
      "token", "Print an HS256 bearer token signed with the JWT secret (serve's --jwt-secret or --jwt-secret-file)");
  auto options = std::make_shared<TokenOptions>();
  token->add_option("--role", options->roles, "teller, auditor or admin (repeatable, or comma-separated)")
      ->required()
      ->delimiter(',')
      ->check(CLI::IsMember({"teller", "auditor", "admin"}));
  token->add_option("--subject", options->subject,
                    "Who acts (the sub claim, recorded as every event's actor): 1 to 128 visible ASCII characters")
      ->required();
  token->add_option("--ttl", options->ttl, "Lifetime: a number and s, m, h or d (15m, 1h, 7d); at most 30d")
      ->required();
  add_jwt_options(*token, options->jwt, /*with_jwks=*/false);

  return [options, &settings]() -> int {
    const auto lifetime = parse_ttl(options->ttl);
    const std::string& subject = options->subject;
    const bool visible = !subject.empty() && subject.size() <= api::jwt_subject_bytes_max &&
                         subject.find_first_not_of("!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                   "[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~") == std::string::npos;
    if (!visible) {
      throw SettingError("--subject", "must be 1 to " + std::to_string(api::jwt_subject_bytes_max) +
                                          " visible ASCII characters (no space)");
    }
    const std::string secret = token_secret(*options, settings);
    const std::string printed = api::issue_token(secret, subject, options->roles, lifetime,
                                                 options->jwt.issuer, options->jwt.audience);
    // What is printed passes serve's check with the same secret, issuer and audience.
    const api::TokenVerifier verifier(api::TokenSettings{.hs256_secret = secret,
                                                         .issuer = options->jwt.issuer,
                                                         .audience = options->jwt.audience});
    const auto checked = verifier.authenticate("Bearer " + printed);
    if (const auto* problem = std::get_if<api::Problem>(&checked)) {
      throw std::runtime_error("the token made does not verify: " + problem->detail);
    }
    std::cout << printed << "\n";
    return 0;
  };
}

}  // namespace ledger::app
