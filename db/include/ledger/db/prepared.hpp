#pragma once
// Statements that run per batch or per round, prepared once per session (issue 18): PostgreSQL
// parses and plans a statement sent with parameters (exec_params) on every execution, a
// prepared one once per session (or once per plan choice).

#include <pqxx/pqxx>

#include <string>
#include <utility>

namespace ledger::db {

// A statement whose text is fixed at compile time; `name` is unique per text.
struct Statement {
  const char* name;
  const char* text;
};

// Runs `text` prepared as `name` on the transaction's connection. Defining it there is a lookup
// in the connection's own table once it is defined (a different text under the same name
// throws); pqxx sends the PREPARE with the first execution on each session, so a
// session opened anew (a reconnect, a new pooled connection) prepares it again by itself. For
// SQL built at run time (a rebuild's shadow tables), `name` must name the tables too.
template <typename... Args>
pqxx::result exec_statement(pqxx::transaction_base& work, const std::string& name,
                            const std::string& text, Args&&... args) {
  work.conn().prepare(name, text);
  return work.exec_prepared(name, std::forward<Args>(args)...);
}

template <typename... Args>
pqxx::result exec_statement(pqxx::transaction_base& work, const Statement& statement,
                            Args&&... args) {
  return exec_statement(work, std::string(statement.name), std::string(statement.text),
                        std::forward<Args>(args)...);
}

}  // namespace ledger::db
