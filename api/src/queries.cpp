#include "queries.hpp"

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <memory>

#include "handlers/handlers.hpp"
#include "json_text.hpp"
#include "ledger/core/money.hpp"
#include "ledger/domain/loan_book.hpp"
#include "ledger/domain/state.hpp"
#include "ledger/domain/types.hpp"
#include "ledger/projections/read_models.hpp"

namespace ledger::api {

namespace {

using handlers::parse_integer;

constexpr std::int64_t page_limit_max = 1'000;
constexpr std::int64_t page_limit_default = 100;
constexpr std::int64_t wait_ms_default = 2'000;
constexpr std::int64_t wait_ms_max = 10'000;

QueryAnswer problem(int status, std::string code, std::string title, std::string detail) {
  QueryAnswer answer;
  answer.status = status;
  answer.code = std::move(code);
  answer.title = std::move(title);
  answer.detail = std::move(detail);
  return answer;
}

struct Parsed {
  std::optional<std::int64_t> min_position;
  std::int64_t wait_ms = wait_ms_default;
  projections::AuditFilter audit;  // cursor and limit serve entries too
};

// Every parameter is checked; an unknown one is an error, not silently ignored.
std::optional<QueryAnswer> parse(QueryKind kind, const QueryParameters& parameters, Parsed& out) {
  out.audit.limit = page_limit_default;
  auto invalid = [](const std::string& name, const std::string& rule) {
    return problem(400, "invalid_query", "Invalid query parameter", "invalid " + name + ": " + rule);
  };
  for (const auto& [name, value] : parameters) {
    const auto number = parse_integer(value);
    const bool paged = kind == QueryKind::entries || kind == QueryKind::audit;
    if (name == "min_position") {
      if (!number || *number < 0) return invalid(name, "a position >= 0");
      out.min_position = *number;
    } else if (name == "wait_ms") {
      if (!number || *number < 0 || *number > wait_ms_max) return invalid(name, "0 to 10000");
      out.wait_ms = *number;
    } else if (paged && name == "limit") {
      if (!number || *number < 1 || *number > page_limit_max) return invalid(name, "1 to 1000");
      out.audit.limit = static_cast<std::size_t>(*number);
    } else if (paged && name == "cursor") {
      if (!number || *number < 0) return invalid(name, "a cursor returned as next_cursor");
      out.audit.after_position = *number;
    } else if (kind == QueryKind::audit && (name == "actor" || name == "type" || name == "stream")) {
      if (value.empty() || value.size() > 256) return invalid(name, "1 to 256 characters");
      (name == "actor" ? out.audit.actor : name == "type" ? out.audit.type : out.audit.stream_id) = value;
    } else if (kind == QueryKind::audit && (name == "from" || name == "to")) {
      const auto time = parse_rfc3339(value);
      if (!time) return invalid(name, "an RFC 3339 time such as 2026-01-31T12:00:00Z");
      (name == "from" ? out.audit.from_us : out.audit.to_us) = *time;
    } else {
      return problem(400, "invalid_query", "Invalid query parameter", "unknown parameter " + name);
    }
  }
  return std::nullopt;
}

std::string account_json(const projections::AccountView& a, std::int64_t watermark) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  write_member(w, "id", a.id);
  write_member(w, "currency", a.currency);
  write_member(w, "kind", a.kind);
  write_member(w, "owner", a.owner);
  write_member(w, "status", a.status);
  write_member(w, "ledger_code", a.ledger_code);
  write_member(w, "debits_posted", a.debits_posted);
  write_member(w, "credits_posted", a.credits_posted);
  write_member(w, "debits_pending", a.debits_pending);
  write_member(w, "credits_pending", a.credits_pending);
  // The domain's rule (an overflow here would be a corrupt read model: null, not a wrapped number).
  const auto balances = domain::account_balances(Amount(a.credits_posted), Amount(a.debits_posted),
                                                 Amount(a.debits_pending), Amount(a.overdraft_limit));
  w.Key("balance");
  balances.balance ? w.Int64(balances.balance->minor_units()) : w.Null();
  w.Key("available");
  balances.available ? w.Int64(balances.available->minor_units()) : w.Null();
  write_member(w, "overdraft_limit", a.overdraft_limit);
  write_member(w, "version", a.version);
  write_member(w, "watermark", watermark);
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

// Closes a page: the cursor of the next one (null on the last) and the watermark read at.
void end_page(JsonWriter& w, const std::optional<std::int64_t>& next_cursor, std::int64_t watermark) {
  w.Key("next_cursor");
  next_cursor ? w.String(std::to_string(*next_cursor).c_str()) : w.Null();
  write_member(w, "watermark", watermark);
  w.EndObject();
}

std::string entries_json(const projections::EntriesPage& page, std::int64_t watermark) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("entries");
  w.StartArray();
  for (const auto& e : page.entries) {
    w.StartObject();
    write_member(w, "position", e.position);
    write_member(w, "version", e.version);
    write_member(w, "transfer_id", e.transfer_id);
    write_member(w, "direction", e.direction);
    write_member(w, "phase", e.phase);
    write_member(w, "amount", e.amount);
    write_member(w, "counterparty", e.counterparty);
    write_member(w, "balance_after", e.balance_after);
    write_member(w, "recorded_at", rfc3339(e.recorded_at_us));
    w.EndObject();
  }
  w.EndArray();
  end_page(w, page.next_cursor, watermark);
  return {buffer.GetString(), buffer.GetSize()};
}

// The read model's installments as the domain's book (the due date stored as YYYY-MM-DD).
std::vector<domain::InstallmentBook> installment_books(const projections::LoanView& loan) {
  std::vector<domain::InstallmentBook> books;
  books.reserve(loan.installments.size());
  for (const auto& i : loan.installments) {
    domain::InstallmentBook book;
    book.number = i.number;
    book.due_date = domain::parse_date(i.due_date).value_or(domain::Date{});  // written from a Date
    book.principal = i.principal;
    book.interest = i.interest;
    book.principal_paid = i.principal_paid;
    book.interest_paid = i.interest_paid;
    book.penalty = i.penalty;
    book.penalty_paid = i.penalty_paid;
    book.overdue = i.overdue;
    book.interest_waived = i.interest_waived;
    books.push_back(book);
  }
  return books;
}

void write_loan_amounts(JsonWriter& w, const projections::LoanView& loan) {
  // What the loan owes and has paid, by the domain's rules (loan_book.hpp).
  const domain::InstallmentTotals totals = domain::installment_totals(installment_books(loan));
  const bool written_off = loan.status == "written_off";
  // Only an active loan has a next installment to pay.
  const projections::LoanInstallmentView* next =
      loan.status == "active" && totals.next_unsettled ? &loan.installments[*totals.next_unsettled] : nullptr;
  write_member(w, "outstanding_principal", written_off ? 0 : totals.principal_outstanding);
  write_member(w, "interest_accrued", loan.interest_recognised);
  write_member(w, "interest_paid", totals.interest_paid);
  write_member(w, "interest_overdue", totals.interest_overdue);
  write_member(w, "penalties_due", written_off ? 0 : totals.penalties_due);
  write_member(w, "penalties_paid", totals.penalties_paid);
  w.Key("next_due_date");
  if (next == nullptr) {
    w.Null();
  } else {
    write_string(w, next->due_date);
  }
  w.Key("next_due_amount");
  next == nullptr ? w.Null() : w.Int64(totals.next_due_amount);
}

void write_loan_fields(JsonWriter& w, const projections::LoanView& loan) {
  write_member(w, "id", loan.id);
  write_member(w, "account_id", loan.borrower);
  write_member(w, "currency", loan.currency);
  write_member(w, "status", loan.status);
  write_member(w, "principal", loan.principal);
  write_member(w, "rate_bps", loan.rate_bps);
  write_member(w, "schedule", loan.schedule_type);
  write_member(w, "origination_date", loan.origination_date);
  w.Key("business_date");
  if (loan.closed_through.empty()) {
    w.Null();
  } else {
    write_string(w, loan.closed_through);
  }
  write_loan_amounts(w, loan);
  write_member(w, "days_past_due", loan.days_past_due);
  write_member(w, "principal_written_off", loan.principal_written_off);
  write_member(w, "interest_reversed", loan.interest_reversed);
  write_member(w, "version", loan.version);
}

std::string loan_json(const projections::LoanView& loan, std::int64_t watermark) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  write_loan_fields(w, loan);
  write_member(w, "watermark", watermark);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string schedule_json(const projections::LoanView& loan, std::int64_t watermark) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  write_member(w, "id", loan.id);
  w.Key("installments");
  w.StartArray();
  for (const auto& i : loan.installments) {
    const char* status = i.settled() ? "paid"
                         : i.overdue ? "overdue"
                         : (!loan.closed_through.empty() && i.due_date <= loan.closed_through) ? "due"
                                                                                                : "pending";
    w.StartObject();
    write_member(w, "n", i.number);
    write_member(w, "due_date", i.due_date);
    write_member(w, "principal", i.principal);
    write_member(w, "interest", i.interest);
    write_member(w, "total", i.principal + i.interest);
    write_member(w, "paid", i.principal_paid + i.interest_paid);
    write_member(w, "penalty", i.penalty);
    write_member(w, "penalty_paid", i.penalty_paid);
    w.Key("interest_waived");
    w.Bool(i.interest_waived);
    write_member(w, "status", status);
    w.EndObject();
  }
  w.EndArray();
  write_member(w, "watermark", watermark);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string account_loans_json(const std::vector<projections::LoanView>& loans, std::int64_t watermark) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("loans");
  w.StartArray();
  for (const auto& loan : loans) {
    w.StartObject();
    write_loan_fields(w, loan);
    w.EndObject();
  }
  w.EndArray();
  write_member(w, "watermark", watermark);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string audit_json(const projections::AuditPage& page, std::int64_t watermark) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("events");
  w.StartArray();
  for (const auto& row : page.rows) {
    w.StartObject();
    write_member(w, "position", row.position);
    write_member(w, "stream_id", row.stream_id);
    write_member(w, "version", row.version);
    write_member(w, "type", row.type);
    write_member(w, "event_id", row.event_id);
    write_member(w, "recorded_at", rfc3339(row.recorded_at_us));
    for (const auto& [key, value] :
         {std::pair{"actor", &row.actor}, {"command_id", &row.command_id},
          {"correlation_id", &row.correlation_id}, {"causation_id", &row.causation_id},
          {"request_id", &row.request_id}, {"client_address", &row.client_address}}) {
      w.Key(key);
      write_string(w, *value);
    }
    w.Key("data");
    w.RawValue(row.data_json.data(), row.data_json.size(), rapidjson::kObjectType);
    w.EndObject();
  }
  w.EndArray();
  end_page(w, page.next_cursor, watermark);
  return {buffer.GetString(), buffer.GetSize()};
}

QueryAnswer read(projections::ReadModels& read_models, QueryKind kind, const std::string& id,
                 const Parsed& parsed) {
  QueryAnswer answer;
  switch (kind) {
    case QueryKind::account: {
      const auto result = read_models.account(id);
      answer.watermark = result.watermark;
      if (!result.value) {
        answer = problem(404, "unknown_account", "Not found", "no account " + id + " in the read model");
        answer.watermark = result.watermark;
        return answer;
      }
      answer.body = account_json(*result.value, result.watermark);
      return answer;
    }
    case QueryKind::entries: {
      const auto result = read_models.entries(id, parsed.audit.after_position, parsed.audit.limit);
      if (!result.value) {
        answer = problem(404, "unknown_account", "Not found", "no account " + id + " in the read model");
        answer.watermark = result.watermark;
        return answer;
      }
      answer.watermark = result.watermark;
      answer.body = entries_json(*result.value, result.watermark);
      return answer;
    }
    case QueryKind::audit: {
      const auto result = read_models.audit(parsed.audit);
      answer.watermark = result.watermark;
      answer.body = audit_json(result.value, result.watermark);
      return answer;
    }
    case QueryKind::loan:
    case QueryKind::loan_schedule: {
      const auto result = read_models.loan(id);
      if (!result.value) {
        answer = problem(404, "unknown_loan", "Not found", "no loan " + id + " in the read model");
        answer.watermark = result.watermark;
        return answer;
      }
      answer.watermark = result.watermark;
      answer.body = kind == QueryKind::loan ? loan_json(*result.value, result.watermark)
                                            : schedule_json(*result.value, result.watermark);
      return answer;
    }
    case QueryKind::account_loans: {
      const auto result = read_models.loans_of(id);
      if (!result.value) {
        answer = problem(404, "unknown_account", "Not found", "no account " + id + " in the read model");
        answer.watermark = result.watermark;
        return answer;
      }
      answer.watermark = result.watermark;
      answer.body = account_loans_json(*result.value, result.watermark);
      return answer;
    }
  }
  return answer;
}

// The one stream a query reads, if it reads one: what its min_position waits for.
std::optional<std::string> stream_of(QueryKind kind, const std::string& id) {
  switch (kind) {
    case QueryKind::account:
    case QueryKind::entries: return domain::account_stream(id);
    case QueryKind::loan:
    case QueryKind::loan_schedule: return domain::loan_stream(id);
    case QueryKind::audit:
    case QueryKind::account_loans: return std::nullopt;
  }
  return std::nullopt;
}

projections::ProjectionKind projection_of(QueryKind kind) {
  switch (kind) {
    case QueryKind::audit: return projections::ProjectionKind::audit;
    case QueryKind::loan:
    case QueryKind::loan_schedule:
    case QueryKind::account_loans: return projections::ProjectionKind::loan;
    case QueryKind::account:
    case QueryKind::entries: return projections::ProjectionKind::balance;
  }
  return projections::ProjectionKind::balance;
}

}  // namespace

QueryAnswer unavailable_answer(bool replica) {
  if (replica) {
    return problem(503, "read_replica_unavailable", "Service unavailable",
                   "the read replica cannot be read now; commands are still accepted");
  }
  return problem(503, "database_unavailable", "Service unavailable", "the read models cannot be read now");
}

void run_query(QuerySource source, boost::asio::thread_pool& blocking, QueryKind kind, std::string id,
               const QueryParameters& parameters, std::function<void(QueryAnswer)> done) {
  auto parsed = std::make_shared<Parsed>();
  if (auto failure = parse(kind, parameters, *parsed)) {
    done(std::move(*failure));
    return;
  }
  if (kind != QueryKind::audit && !domain::is_valid_id(id)) {
    done(problem(400, "invalid_id", "Invalid id", "ids are 1 to 64 of A-Za-z0-9._:-"));
    return;
  }
  const std::string id_for_wait = id;
  projections::ReadModels* models = &source.read_models;
  const bool replica = source.replica;
  // Reads on the blocking pool and hands the answer to `answer`, or the source's 503.
  auto read_then = [models, &blocking, kind, id = std::move(id), parsed, replica](
                       std::function<void(QueryAnswer)> answer) {
    boost::asio::post(blocking, [models, kind, id, parsed, replica, answer = std::move(answer)] {
      QueryAnswer result;
      try {
        result = read(*models, kind, id, *parsed);
      } catch (const std::exception& error) {
        spdlog::warn("{} query failed: {}", replica ? "read replica" : "read model", error.what());
        result = unavailable_answer(replica);
      }
      answer(std::move(result));
    });
  };
  if (!parsed->min_position) {
    read_then(done);
    return;
  }
  const std::int64_t wanted = *parsed->min_position;
  // Read first: an answer already at min_position needs no wait, and a source that cannot be
  // read is answered 503 at once rather than "behind" when the wait runs out (the watcher keeps
  // polling a source that is down). Rows and watermark come from one snapshot, so an answer
  // below `wanted` is never sent as 200.
  read_then([models, read_then, done, wanted, kind, parsed, replica, id_for_wait](QueryAnswer first) {
    if (first.status == 503 || (first.watermark && *first.watermark >= wanted)) {
      done(std::move(first));
      return;
    }
    const std::string projection(projections::to_string(projection_of(kind)));
    // A query about one stream waits for that stream's partition of the read model only (the
    // others may lag without making the answer stale); the rest wait for every partition.
    models->wait_for(projection_of(kind), wanted, std::chrono::milliseconds(parsed->wait_ms),
                         [read_then, done, wanted, projection, parsed, replica](bool reached, std::int64_t watermark) {
                           if (reached) {
                             read_then(done);
                             return;
                           }
                           // No read here: this also runs when the read models are destroyed.
                           QueryAnswer behind = problem(
                               504, "read_model_behind", "Read model behind",
                               "the " + projection + " read model" + (replica ? " on the read replica" : "") +
                                   " is at position " + std::to_string(watermark) + ", below min_position " +
                                   std::to_string(wanted) + ", after " + std::to_string(parsed->wait_ms) + " ms");
                           behind.watermark = watermark;
                           done(std::move(behind));
                         },
                         stream_of(kind, id_for_wait));
  });
}

}  // namespace ledger::api
