#include "idempotency_store.hpp"

#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <stdexcept>
#include <thread>

#include "ledger/core/assert.hpp"
#include "ledger/db/sql_text.hpp"
#include "outcome_codec.hpp"
#include "store_sql.hpp"

namespace ledger::engine {

namespace {

// How long the in-doubt check waits for the session that sent the COMMIT to end.
constexpr std::chrono::seconds in_doubt_session_wait_max{5};

}  // namespace

std::string request_hash(std::string_view fingerprint) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(fingerprint.data(), fingerprint.size(), digest, &length, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(digest), length);
}

std::vector<StoredIdempotencyKey> find_idempotency_keys(pqxx::transaction_base& work,
                                                        const std::vector<IdempotencyKey>& keys) {
  db::ArrayLiteral actors, names;
  for (const auto& [actor, key] : keys) {
    actors.add_text(actor);
    names.add_text(key);
  }
  const auto rows = domain::sql::exec_statement(work, domain::sql::idempotency_keys_statement,
                                                actors.finish(), names.finish());
  std::vector<StoredIdempotencyKey> stored;
  stored.reserve(rows.size());
  for (const auto& row : rows) {
    auto outcome = outcome_from_json(pqxx::binarystring(row[3]).str());
    LEDGER_ASSERT(outcome.has_value(), "stored idempotency outcome is not valid JSON");
    stored.push_back({{row[0].as<std::string>(), row[1].as<std::string>()},
                      pqxx::binarystring(row[2]).str(), std::move(*outcome)});
  }
  return stored;
}

IdempotencyRecord idempotency_record(const CommandContext& context, const std::string& hash,
                                     const CommandOutcome& outcome) {
  return {context.actor, context.idempotency_key, hash, outcome_to_json(outcome),
          outcome.position.value()};
}

std::optional<bool> committed_in_doubt(db::ConnectionPool& pool, const std::string& first_event_id,
                                       int backend_pid, int attempts_max) {
  for (int attempt = 0; attempt < attempts_max; ++attempt) {
    try {
      auto lease = pool.acquire();
      if (backend_pid != 0 && backend_pid != lease->backendpid()) {
        pqxx::nontransaction session(*lease);
        session.exec_params(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1", backend_pid);
        const auto deadline = std::chrono::steady_clock::now() + in_doubt_session_wait_max;
        while (!session.exec_params("SELECT 1 FROM pg_stat_activity WHERE pid = $1", backend_pid)
                    .empty()) {
          if (std::chrono::steady_clock::now() > deadline) {
            throw std::runtime_error("the session of the in-doubt commit (pid " +
                                     std::to_string(backend_pid) + ") is still running");
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
      pqxx::read_transaction work(*lease);
      return domain::sql::event_exists(work, first_event_id);
    } catch (const std::exception& error) {
      spdlog::warn("checking an in-doubt commit failed: {}", error.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(200) * (attempt + 1));
    }
  }
  return std::nullopt;
}

bool end_abandoned_session(pqxx::connection& connection, int backend_pid,
                           std::chrono::milliseconds abandoned_for) {
  pqxx::nontransaction session(connection);
  const auto rows = session.exec_params(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
      "WHERE pid = $1 AND usename = current_user "
      "AND backend_start < now() - make_interval(secs => $2::double precision / 1000)",
      backend_pid, abandoned_for.count());
  return rows.empty() || rows[0][0].as<bool>();
}

}  // namespace ledger::engine
