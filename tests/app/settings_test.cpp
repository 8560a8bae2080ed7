// Every invalid setting stops start-up with one line naming the setting, exit code 2.
#include <doctest/doctest.h>

#include <filesystem>
#include <algorithm>
#include <fstream>

#include <jwt/jwt.hpp>

#include "jwt_keys.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/process.hpp"
#include "test_cluster.hpp"

using namespace ledger;

namespace {

struct Outcome {
  process::ExitStatus status;
  std::string output;
};

Outcome run_ledger(std::vector<std::string> arguments, std::vector<std::string> environment = {}) {
  arguments.insert(arguments.begin(), test::ledger_binary());
  process::SpawnOptions options;
  options.extra_environment = std::move(environment);
  options.extra_environment.push_back("LEDGER_HOME=/tmp/ledger-settings-test-empty-home");
  Outcome outcome;
  outcome.status = process::run(arguments, outcome.output, options);
  return outcome;
}

void check_one_line_error(const Outcome& outcome, const std::string& setting) {
  INFO(outcome.output);
  CHECK(outcome.status.exited);
  CHECK(outcome.status.code == 2);
  CHECK(outcome.output.find("ledger: error: ") == 0);
  CHECK(outcome.output.find(setting) != std::string::npos);
  CHECK(std::count(outcome.output.begin(), outcome.output.end(), '\n') == 1);
}

const std::string development_secret = "ledger-development-secret-never-use-in-production";
const std::string strong_secret = "settings-test-secret-of-at-least-32-bytes";

// A file in a fresh temporary directory holding `content`.
std::string write_temporary_file(const std::string& name, const std::string& content) {
  const auto directory = std::filesystem::temp_directory_path() / "ledger-settings-test-files";
  std::filesystem::create_directories(directory);
  const auto path = directory / name;
  std::ofstream(path, std::ios::trunc) << content;
  // Private, as a secret file should be (serve warns about one that others can read).
  std::filesystem::permissions(
      path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
      std::filesystem::perm_options::replace);
  return path.string();
}

}  // namespace

TEST_CASE("an unknown log level, as a flag or an environment variable") {
  check_one_line_error(run_ledger({"--log-level", "loud", "migrate", "status"}), "--log-level");
  check_one_line_error(run_ledger({"migrate", "status"}, {"LEDGER_LOG_LEVEL=loud"}),
                       "--log-level");
  check_one_line_error(run_ledger({"migrate", "status", "--log-format", "xml"}), "--log-format");
}

TEST_CASE("a bad database URL") {
  check_one_line_error(run_ledger({"--database-url", "postgresql://%zz", "migrate", "status"}),
                       "--database-url");
  check_one_line_error(run_ledger({"migrate", "status"}, {"LEDGER_DATABASE_URL=nonsense words"}),
                       "--database-url");
}

TEST_CASE("a port out of range and a malformed broker list") {
  check_one_line_error(run_ledger({"dev", "--postgres-port", "70000"}), "--postgres-port");
  check_one_line_error(run_ledger({"--kafka-brokers", "localhost", "migrate", "status"}),
                       "--kafka-brokers");
  check_one_line_error(run_ledger({"--kafka-brokers", "localhost:0", "migrate", "status"}),
                       "--kafka-brokers");
}

TEST_CASE("a Kafka property that is malformed, unknown, badly valued or one ledger's guarantees rest on") {
  for (const std::string property : {"no-equals-sign", "=value", "no.such.property=1", "socket.timeout.ms=soon",
                                     "acks=1", "enable.idempotence=false", "enable.auto.commit=true", "group.id=x"}) {
    INFO(property);
    check_one_line_error(run_ledger({"--kafka-property", property, "migrate", "status"}), "--kafka-property");
  }
  check_one_line_error(run_ledger({"migrate", "status"}, {"LEDGER_KAFKA_PROPERTIES=socket.timeout.ms=5000;acks=0"}),
                       "--kafka-property");
  // Accepted ones pass: what fails then is the next setting, the missing database.
  check_one_line_error(run_ledger({"--kafka-property", "socket.timeout.ms=5000", "--kafka-property",
                                   "client.id=ledger-test", "migrate", "status"}),
                       "--database-url");
}

TEST_CASE("a Kafka property from a file: missing, empty, reserved or badly valued is refused; a good one is read") {
  const std::string missing = "/nonexistent/ledger-settings-test/sasl-password";
  const std::string empty = write_temporary_file("kafka-empty", "");
  const std::string bad_timeout = write_temporary_file("kafka-bad-timeout", "soon\n");
  const std::string password = write_temporary_file("kafka-password", "s3cret-from-a-file\n");
  for (const std::string& setting : std::vector<std::string>{"sasl.password", "=" + password, "sasl.password=", "sasl.password=" + missing,
                                    "sasl.password=" + empty, "socket.timeout.ms=" + bad_timeout,
                                    "group.id=" + password, "no.such.property=" + password}) {
    INFO(setting);
    check_one_line_error(run_ledger({"--kafka-property-file", setting, "migrate", "status"}),
                         "--kafka-property-file");
  }
  // The error names the file, never the secret it holds.
  const auto reserved = run_ledger({"--kafka-property-file", "group.id=" + password, "migrate", "status"});
  CHECK(reserved.output.find("s3cret") == std::string::npos);
  check_one_line_error(run_ledger({"migrate", "status"}, {"LEDGER_KAFKA_PROPERTY_FILES=sasl.password=" + missing}),
                       "--kafka-property-file");
  // Read and accepted by librdkafka (a value "soon" in its file was refused above): what fails
  // next is the missing database.
  check_one_line_error(run_ledger({"--kafka-property-file", "sasl.password=" + password, "--kafka-property-file",
                                   "socket.timeout.ms=" + write_temporary_file("kafka-timeout", "5000\n"),
                                   "migrate", "status"}),
                       "--database-url");
}

TEST_CASE("a consumer group prefix must be a plain Kafka group name") {
  for (const std::string& prefix : std::vector<std::string>{"", "has space", "semi;colon", std::string(201, 'p')}) {
    INFO(prefix);
    check_one_line_error(run_ledger({"--consumer-group-prefix", prefix, "migrate", "status"}),
                         "--consumer-group-prefix");
  }
  check_one_line_error(run_ledger({"--consumer-group-prefix", "bank-a.ledger-", "migrate", "status"}),
                       "--database-url");
}

TEST_CASE(
    "a projector's round linger outside 0 to 1,000 ms, as a flag or an environment variable") {
  check_one_line_error(run_ledger({"project", "all", "--batch-linger-ms", "-1"}),
                       "--batch-linger-ms");
  check_one_line_error(run_ledger({"project", "all", "--batch-linger-ms", "1001"}),
                       "--batch-linger-ms");
  check_one_line_error(run_ledger({"project", "all", "--batch-linger-ms", "5ms"}),
                       "--batch-linger-ms");
  check_one_line_error(run_ledger({"project", "all"}, {"LEDGER_PROJECT_BATCH_LINGER_MS=many"}),
                       "--batch-linger-ms");
}

TEST_CASE("a bad value in the config file") {
  const auto path = std::filesystem::temp_directory_path() / "ledger-settings-test.toml";
  std::ofstream(path) << "log-level = \"chatty\"\n";
  check_one_line_error(run_ledger({"--config", path.string(), "migrate", "status"}), "--log-level");
  std::filesystem::remove(path);
}

TEST_CASE("a missing required setting outside the embedded stack") {
  check_one_line_error(run_ledger({"migrate", "status"}), "--database-url");
}

TEST_CASE("help exits 0") {
  const auto outcome = run_ledger({"--help"});
  CHECK(outcome.status.success());
  CHECK(outcome.output.find("migrate") != std::string::npos);
}

TEST_CASE("--version prints the version on one line and exits 0, without a subcommand") {
  // The container image check (ops/image.sh) runs it first: the binary starts in the image.
  const auto outcome = run_ledger({"--version"});
  INFO(outcome.output);
  CHECK(outcome.status.success());
  CHECK(outcome.output == "ledger " LEDGER_VERSION "\n");
}

TEST_CASE("serve needs a strong JWT secret and refuses the development one outside ledger dev") {
  check_one_line_error(run_ledger({"serve"}), "--jwt-secret");
  check_one_line_error(run_ledger({"serve", "--jwt-secret", "short"}), "--jwt-secret");
  check_one_line_error(
      run_ledger({"serve"}, {"LEDGER_JWT_SECRET=ledger-development-secret-never-use-in-production"}),
      "development secret");
  check_one_line_error(run_ledger({"serve", "--http-port", "70000"}), "--http-port");
  check_one_line_error(run_ledger({"serve", "--migrate", "sometimes"}), "--migrate");
}

TEST_CASE("LEDGER_DEV_MODE does not let serve accept the development secret") {
  check_one_line_error(
      run_ledger({"serve"}, {"LEDGER_JWT_SECRET=" + development_secret, "LEDGER_DEV_MODE=1"}),
      "development secret");
  const auto file = write_temporary_file("development-secret", development_secret + "\n");
  check_one_line_error(run_ledger({"serve", "--jwt-secret-file", file}, {"LEDGER_DEV_MODE=1"}),
                       "development secret");
}

TEST_CASE("serve reads the JWT secret from --jwt-secret-file, trailing newline trimmed") {
  // A readable, strong secret passes the secret checks: start-up goes on to the database URL,
  // which this empty home does not have.
  const auto file = write_temporary_file("strong-secret", strong_secret + "\n");
  check_one_line_error(run_ledger({"serve", "--jwt-secret-file", file}), "--database-url");
  check_one_line_error(run_ledger({"serve"}, {"LEDGER_JWT_SECRET_FILE=" + file}), "--database-url");
  // Trimming only the newline: 31 bytes and a newline are too short.
  const auto short_file = write_temporary_file("short-secret", strong_secret.substr(0, 31) + "\n");
  check_one_line_error(run_ledger({"serve", "--jwt-secret-file", short_file}),
                       "--jwt-secret-file (LEDGER_JWT_SECRET_FILE): must be at least 32 bytes");
}

TEST_CASE("a missing, empty or unreadable secret file, or both secret settings, stop serve") {
  const auto missing = (std::filesystem::temp_directory_path() / "ledger-no-such-secret").string();
  std::filesystem::remove(missing);
  check_one_line_error(run_ledger({"serve", "--jwt-secret-file", missing}),
                       "--jwt-secret-file (LEDGER_JWT_SECRET_FILE): cannot read " + missing);
  const auto empty = write_temporary_file("empty-secret", "\n");
  check_one_line_error(run_ledger({"serve", "--jwt-secret-file", empty}),
                       "--jwt-secret-file (LEDGER_JWT_SECRET_FILE): " + empty + " is empty");
  // A directory cannot be read as a file, even by root.
  const auto directory = std::filesystem::temp_directory_path().string();
  check_one_line_error(run_ledger({"serve", "--jwt-secret-file", directory}),
                       "--jwt-secret-file (LEDGER_JWT_SECRET_FILE): cannot read " + directory);
  const auto file = write_temporary_file("strong-secret", strong_secret + "\n");
  check_one_line_error(
      run_ledger({"serve", "--jwt-secret-file", file, "--jwt-secret", strong_secret}),
      "give --jwt-secret or --jwt-secret-file, not both");
  check_one_line_error(
      run_ledger({"serve", "--jwt-secret-file", file}, {"LEDGER_JWT_SECRET=" + strong_secret}),
      "give --jwt-secret or --jwt-secret-file, not both");
}

TEST_CASE("serve --migrate=auto needs the owner's URL and never uses the application role's") {
  const auto file = write_temporary_file("strong-secret", strong_secret + "\n");
  check_one_line_error(
      run_ledger({"--database-url", "postgresql://ledger_app@127.0.0.1:1/ledger", "serve",
                  "--jwt-secret-file", file, "--migrate", "auto"},
                 {"LEDGER_DATABASE_CONNECT_TIMEOUT_MS=100"}),
      "--admin-database-url (LEDGER_ADMIN_DATABASE_URL): required by --migrate=auto");
}

TEST_CASE("serve takes an identity provider's keys from --jwt-jwks-file, LEDGER_JWT_JWKS_FILE or the config file") {
  const auto key = test::SigningKey::p256("settings-key");
  const auto good = write_temporary_file("jwks-good.json", test::jwks({&key}));
  // A usable key set and no secret: the token settings are complete, the next missing one is
  // the database.
  check_one_line_error(run_ledger({"serve", "--jwt-jwks-file", good}), "--database-url");
  check_one_line_error(run_ledger({"serve"}, {"LEDGER_JWT_JWKS_FILE=" + good}), "--database-url");
  // Nothing to verify tokens with.
  check_one_line_error(run_ledger({"serve"}), "--jwt-jwks-file");

  const auto garbage = write_temporary_file("jwks-garbage.json", R"({"keys":[{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB"}]})");
  const std::string why = "--jwt-jwks-file (LEDGER_JWT_JWKS_FILE): " + garbage + ": key 0 (kid \"k\"): an RSA modulus of 17 bits";
  check_one_line_error(run_ledger({"serve", "--jwt-jwks-file", garbage}), why);
  check_one_line_error(run_ledger({"serve"}, {"LEDGER_JWT_JWKS_FILE=" + garbage}), why);
  const auto config = write_temporary_file("jwks.toml", "[serve]\njwt-jwks-file = \"" + garbage + "\"\n");
  check_one_line_error(run_ledger({"--config", config, "serve"}), why);
  const auto missing = (std::filesystem::temp_directory_path() / "ledger-no-such-jwks.json").string();
  check_one_line_error(run_ledger({"serve", "--jwt-jwks-file", missing}),
                       "--jwt-jwks-file (LEDGER_JWT_JWKS_FILE): cannot read " + missing);
}

TEST_CASE("serve refuses a trusted proxy that is no address or CIDR block, as a flag, variable or config key") {
  for (const std::string bad : {"10.0.0.0/33", "proxy.example", "fd00::/129", "10.0.0.1,unknown", "10.0.0.0/"}) {
    INFO(bad);
    check_one_line_error(run_ledger({"serve", "--http-trusted-proxies", bad}), "--http-trusted-proxies");
    check_one_line_error(run_ledger({"serve"}, {"LEDGER_HTTP_TRUSTED_PROXIES=" + bad}), "--http-trusted-proxies");
  }
  const auto config = write_temporary_file("proxies.toml", "[serve]\nhttp-trusted-proxies = [\"10.0.0.1\", \"fd00::/129\"]\n");
  check_one_line_error(run_ledger({"--config", config, "serve"}), "--http-trusted-proxies");
  // Good lists pass: what fails then is the next setting, the missing token keys.
  check_one_line_error(run_ledger({"serve", "--http-trusted-proxies", "10.0.0.0/8,192.0.2.7,fd00::/8"}),
                       "--jwt-jwks-file");
  check_one_line_error(run_ledger({"serve"}, {"LEDGER_HTTP_TRUSTED_PROXIES=10.0.0.0/8,::1"}), "--jwt-jwks-file");
  const auto good = write_temporary_file("proxies-good.toml", "[serve]\nhttp-trusted-proxies = [\"10.0.0.1\", \"fd00::/8\"]\n");
  check_one_line_error(run_ledger({"--config", good, "serve"}), "--jwt-jwks-file");
}

TEST_CASE("ledger token prints one HS256 token that verifies with the secret, issuer and audience given") {
  const auto file = write_temporary_file("token-secret", strong_secret + "\n");
  const auto before = std::chrono::system_clock::now();
  const auto minted = run_ledger({"token", "--role", "teller,auditor", "--subject", "nightly-report", "--ttl", "15m",
                                  "--jwt-secret-file", file, "--jwt-issuer", "ops"},
                                 {"LEDGER_JWT_AUDIENCE=ledger"});
  REQUIRE_MESSAGE(minted.status.success(), minted.output);
  REQUIRE(std::count(minted.output.begin(), minted.output.end(), '\n') == 1);
  const std::string token = minted.output.substr(0, minted.output.size() - 1);
  const api::TokenVerifier verifier(api::TokenSettings{.hs256_secret = strong_secret, .issuer = "ops", .audience = "ledger"});
  const auto result = verifier.authenticate("Bearer " + token);
  REQUIRE(std::holds_alternative<api::Principal>(result));
  CHECK(std::get<api::Principal>(result).subject == "nightly-report");
  CHECK(std::get<api::Principal>(result).has(api::Role::auditor));
  CHECK_FALSE(std::get<api::Principal>(result).has(api::Role::admin));
  std::error_code error;
  const auto decoded = jwt::decode(token, jwt::params::algorithms({"HS256"}), error, jwt::params::secret(strong_secret),
                                   jwt::params::verify(false));
  const auto exp = decoded.payload().get_claim_value<std::int64_t>("exp");
  const auto expected = std::chrono::duration_cast<std::chrono::seconds>((before + std::chrono::minutes(15)).time_since_epoch()).count();
  CHECK(exp >= expected);
  CHECK(exp <= expected + 5);
  // Another secret does not verify it.
  CHECK(std::holds_alternative<api::Problem>(
      api::TokenVerifier(api::TokenSettings{.hs256_secret = strong_secret + "x", .issuer = "ops", .audience = "ledger"})
          .authenticate("Bearer " + token)));
  // Without a secret setting, the embedded stack's: dev.env of --home names its secret file.
  const auto home = std::filesystem::temp_directory_path() / "ledger-settings-test-token-home";
  std::filesystem::create_directories(home);
  std::ofstream(home / "dev.env", std::ios::trunc) << "LEDGER_JWT_SECRET_FILE=" << file << "\n";
  const auto from_dev = run_ledger({"--home", home.string(), "token", "--role", "admin", "--subject", "dev", "--ttl", "1h"});
  REQUIRE_MESSAGE(from_dev.status.success(), from_dev.output);
  CHECK(std::holds_alternative<api::Principal>(
      api::TokenVerifier(api::TokenSettings{.hs256_secret = strong_secret})
          .authenticate("Bearer " + from_dev.output.substr(0, from_dev.output.size() - 1))));
  std::filesystem::remove_all(home);
  // The secret from the environment works the same way.
  CHECK(run_ledger({"token", "--role", "admin", "--subject", "a", "--ttl", "1h"}, {"LEDGER_JWT_SECRET=" + strong_secret})
            .status.success());
}

TEST_CASE("ledger token refuses a bad role, subject, lifetime or secret, naming the flag") {
  const auto file = write_temporary_file("token-secret", strong_secret + "\n");
  auto token = [&](const std::string& role, const std::string& subject, const std::string& ttl) {
    return run_ledger({"token", "--role", role, "--subject", subject, "--ttl", ttl, "--jwt-secret-file", file});
  };
  check_one_line_error(token("root", "a", "1h"), "--role");
  check_one_line_error(token("teller", "has space", "1h"), "--subject");
  check_one_line_error(token("teller", std::string(129, 's'), "1h"), "--subject");
  for (const std::string ttl : {"15", "m", "15x", "1.5h", "-1h", "0m", "31d", "99999999d", "1h30m"}) {
    INFO(ttl);
    check_one_line_error(token("teller", "a", ttl), "--ttl");
  }
  CHECK(token("teller", "a", "30d").status.success());
  CHECK(token("teller", "a", "90s").status.success());
  check_one_line_error(run_ledger({"token", "--role", "teller", "--subject", "a"}), "--ttl");
  check_one_line_error(run_ledger({"token", "--role", "teller", "--subject", "a", "--ttl", "1h"}), "--jwt-secret");
  check_one_line_error(run_ledger({"token", "--role", "teller", "--subject", "a", "--ttl", "1h", "--jwt-secret", "short"}),
                       "--jwt-secret (LEDGER_JWT_SECRET): must be at least 32 bytes");
  check_one_line_error(
      run_ledger({"token", "--role", "teller", "--subject", "a", "--ttl", "1h", "--jwt-secret", development_secret}),
      "the development secret is public and refused");
}
